import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from pipeline.worker.imaging import DecodeError, decode, read_header
from pipeline.worker.writers import encode, output_format


def save(tmp_path, name, im, **kw):
    p = tmp_path / name
    im.save(p, **kw)
    return p


@pytest.fixture
def base(photo_gray):
    return Image.fromarray(photo_gray[:96, :128])  # 128 x 96, L


def test_mode_L(tmp_path, base):
    d = decode(save(tmp_path, "a.png", base))
    assert d.mode == "L" and d.kind == "gray" and d.gray.dtype == np.uint8
    assert np.array_equal(d.gray, np.asarray(base))


def test_mode_I16(tmp_path, base):
    g16 = np.asarray(base).astype(np.uint16) * 257 + 3
    d = decode(save(tmp_path, "a.tif", Image.fromarray(g16)))
    assert d.mode == "I;16" and d.bits == 16 and np.array_equal(d.gray, g16)


def test_mode_1(tmp_path, base):
    d = decode(save(tmp_path, "a.png", base.convert("1")))
    assert d.mode == "1" and set(np.unique(d.gray)) <= {0, 255}


def test_mode_LA_flattens_on_white(tmp_path, base):
    la = base.convert("LA")
    alpha = np.full((96, 128), 255, np.uint8)
    alpha[:, :10] = 0
    la.putalpha(Image.fromarray(alpha))
    d = decode(save(tmp_path, "a.png", la))
    assert d.kind == "gray" and (d.gray[:, :10] == 255).all()
    assert np.array_equal(d.gray[:, 10:], np.asarray(base)[:, 10:])
    assert "alpha flattened on white" in d.notes


def test_mode_P_gray_palette(tmp_path, base):
    d = decode(save(tmp_path, "a.png", base.convert("P")))
    assert d.mode == "P" and d.kind == "gray"
    assert np.abs(d.gray.astype(int) - np.asarray(base.convert("P").convert("L"))).max() <= 1


def test_rgb_gray_sepia_and_color(tmp_path, base):
    g = np.asarray(base, np.float32)[..., None]
    d = decode(save(tmp_path, "g.png", base.convert("RGB")))
    assert d.kind == "gray" and np.abs(d.gray.astype(int) - np.asarray(base)).max() <= 1
    sepia = np.clip(g * [1.0, 0.85, 0.66] + [10, 5, 0], 0, 255).astype(np.uint8)
    d = decode(save(tmp_path, "s.png", Image.fromarray(sepia)))
    assert d.kind == "toned"
    from skimage import data

    d = decode(save(tmp_path, "c.png", Image.fromarray(data.astronaut()[::4, ::4])))
    assert d.kind == "color"


def test_toned_gray_keeps_lightness(tmp_path, base):
    from skimage.color import rgb2lab

    g = np.asarray(base, np.float32)[..., None]
    sepia = np.clip(g * [1.0, 0.85, 0.66] + [10, 5, 0], 0, 255).astype(np.uint8)
    d = decode(save(tmp_path, "s.png", Image.fromarray(sepia)))
    L_src = rgb2lab(sepia)[..., 0]
    L_gray = rgb2lab(np.repeat(d.gray[..., None], 3, -1))[..., 0]
    assert np.abs(L_src - L_gray).mean() < 0.2


def test_cmyk(tmp_path, base):
    d = decode(save(tmp_path, "a.jpg", base.convert("CMYK"), quality=95))
    assert d.mode == "CMYK" and d.kind == "gray"


def test_exif_orientation_is_applied(tmp_path, base):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate 90 degrees clockwise
    p = save(tmp_path, "r.jpg", base.transpose(Image.ROTATE_90), quality=95, exif=exif.tobytes())
    d = decode(p)
    assert d.gray.shape == (96, 128)  # upright: landscape again
    assert np.abs(d.gray.astype(int) - np.asarray(base)).mean() < 3
    assert d.exif is None  # its orientation alone: nothing left to say of upright pixels
    exif[0x013B] = "A. Fotograf"
    exif[0x8769] = {0xA002: 96, 0xA003: 128}  # the camera's size: the file's, sideways
    d = decode(save(tmp_path, "r2.jpg", base.transpose(Image.ROTATE_90), quality=95,
                    exif=exif.tobytes()))
    e = Image.Exif()
    e.load(d.exif)
    assert e[0x0112] == 1 and e[0x013B] == "A. Fotograf"  # reset beside what is carried
    sub = e.get_ifd(0x8769)  # and the size it states is the upright picture's, not the file's
    assert (sub[0xA002], sub[0xA003]) == (128, 96)


def _png_with_exif(png: bytes, orientation: int) -> bytes:
    e = Image.Exif()
    e[0x0112] = orientation
    body = e.tobytes()[6:]  # eXIf holds the TIFF block without the JPEG "Exif\0\0" prefix
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body
    chunk += struct.pack(">I", zlib.crc32(b"eXIf" + body) & 0xFFFFFFFF)
    at = png.index(b"IDAT") - 4
    return png[:at] + chunk + png[at:]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_48bit_rgb_is_turned_upright_like_8bit(tmp_path, orientation):
    """A 48-bit RGB TIFF or PNG is read a second time for its low 8 bits: that reading must be
    turned as Pillow turns the 8-bit one (Pillow drops a TIFF's tag as it loads it)."""
    import imagecodecs
    import tifffile

    rng = np.random.default_rng(orientation)
    a = rng.integers(0, 65535, (24, 36, 3)).astype(np.uint16)
    a[:4, :6] = 65535  # a corner that tells every turn and flip apart
    tag = [(274, "H", 1, orientation, True)]
    tifffile.imwrite(tmp_path / "a16.tif", a, extratags=tag)
    tifffile.imwrite(tmp_path / "a8.tif", (a >> 8).astype(np.uint8), extratags=tag)
    (tmp_path / "a16.png").write_bytes(_png_with_exif(imagecodecs.png_encode(a), orientation))
    want = decode(tmp_path / "a8.tif").gray.astype(np.float64)
    for name in ("a16.tif", "a16.png"):
        d = decode(tmp_path / name)
        assert d.bits == 16 and d.gray.shape == want.shape, name
        assert np.abs(d.gray / 257.0 - want).max() < 2, name


def test_16bit_gray_with_alpha_png_keeps_its_16_bits(tmp_path):
    import imagecodecs

    g = np.random.default_rng(4).integers(0, 65535, (30, 40)).astype(np.uint16)
    a = np.dstack([g, np.full_like(g, 65535)])
    a[0, 0, 1] = 0  # one transparent pixel: white
    (tmp_path / "la16.png").write_bytes(imagecodecs.png_encode(a))
    d = decode(tmp_path / "la16.png")
    assert d.bits == 16 and d.kind == "gray" and "alpha flattened on white" in d.notes
    assert d.gray[0, 0] == 65535 and np.array_equal(d.gray[1:], g[1:])
    # a damaged one (its IDAT checksum wrong) that the codec refuses: Pillow's 8 bits, said
    b = bytearray((tmp_path / "la16.png").read_bytes())
    end = b.index(b"IDAT") + 4 + int.from_bytes(b[b.index(b"IDAT") - 4:b.index(b"IDAT")], "big")
    b[end] ^= 0xFF
    (tmp_path / "bad.png").write_bytes(bytes(b))
    d = decode(tmp_path / "bad.png")
    assert d.bits == 8 and any("PNG checksum mismatch" in n for n in d.notes)


def test_truncated_files_are_errors(tmp_path, base):
    for name, kw in (("t.jpg", {"quality": 90}), ("t.png", {})):
        full = save(tmp_path, name, base, **kw).read_bytes()
        (tmp_path / name).write_bytes(full[: len(full) // 2])
        with pytest.raises(DecodeError, match="truncated|cannot decode"):
            decode(tmp_path / name)


def test_empty_and_not_an_image(tmp_path):
    (tmp_path / "e.jpg").write_bytes(b"")
    with pytest.raises(DecodeError, match="empty file"):
        decode(tmp_path / "e.jpg")
    (tmp_path / "h.png").write_text("<html>not found</html>")
    with pytest.raises(DecodeError, match="not an image"):
        decode(tmp_path / "h.png")
    with pytest.raises(DecodeError, match="file not found"):
        decode(tmp_path / "missing.png")


def png_declaring(w: int, h: int) -> bytes:
    def chunk(k, d):
        return struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_declaring(50_000, 50_000))
    # the message cites our limit (--max-pixels), not Pillow's error threshold of twice it
    with pytest.raises(DecodeError, match="decompression bomb refused: .*200,000,000-pixel limit"):
        decode(tmp_path / "bomb.png")
    with pytest.raises(DecodeError, match="decompression bomb refused: .*200,000,000-pixel limit"):
        read_header(tmp_path / "bomb.png")
    # the limit is configurable: a small limit refuses an ordinary image
    Image.new("L", (100, 100)).save(tmp_path / "ok.png")
    with pytest.raises(DecodeError, match="the 5,000-pixel limit"):
        decode(tmp_path / "ok.png", max_pixels=5000)
    assert decode(tmp_path / "ok.png").gray.shape == (100, 100)


def test_header_reads_without_decoding(tmp_path, base):
    p = save(tmp_path, "a.png", base)
    h = read_header(p)
    assert (h.width, h.height, h.mode, h.format, h.frames) == (128, 96, "L", "PNG", 1)


def png16_pixels(data: bytes) -> tuple[int, np.ndarray]:
    """Bit depth from our PNG's IHDR; pixels decoded by libpng (imagecodecs), not by us."""
    import imagecodecs

    assert data[12:16] == b"IHDR"
    depth = data[24]
    return depth, imagecodecs.png_decode(data)


def test_encode_formats_and_metadata():
    rng = np.random.default_rng(0)
    rgb8 = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    rgb16 = rng.integers(0, 65536, (20, 30, 3), dtype=np.uint16)
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "ScanCo"  # Make
    for fmt in ("png", "jpeg", "tiff"):
        im = Image.open(io.BytesIO(encode(rgb8, fmt, dpi=(300, 300), icc=icc, exif=exif.tobytes())))
        assert im.size == (30, 20) and im.mode == "RGB"
        assert round(im.info["dpi"][0]) == 300
        assert im.info.get("icc_profile") == icc
        assert im.getexif().get(0x010F) == "ScanCo"
        if fmt != "jpeg":
            assert np.array_equal(np.asarray(im), rgb8)
    depth, px = png16_pixels(encode(rgb16, "png", dpi=(600, 600)))
    assert depth == 16 and np.array_equal(px, rgb16)
    import tifffile

    with tifffile.TiffFile(io.BytesIO(encode(rgb16, "tiff", dpi=(600, 600), icc=icc))) as t:
        page = t.pages[0]
        assert page.dtype == np.uint16 and np.array_equal(page.asarray(), rgb16)
        assert page.tags["InterColorProfile"].value == icc
        assert page.tags["XResolution"].value == (600, 1)


def test_output_format_same():
    assert output_format("same", "JPEG") == "jpeg"
    assert output_format("same", "TIFF") == "tiff"
    assert output_format("same", "BMP") == "png"
    with pytest.raises(ValueError):
        output_format("gif", "PNG")


def test_encode_takes_rgb_views_of_any_layout():
    """An RGB view of an RGBX buffer (the colour lookup's output) and other strided views
    encode to exactly the pixels of their contiguous copies."""
    rng = np.random.default_rng(3)
    rgbx = rng.integers(0, 256, (37, 53, 4), dtype=np.uint8)
    for view in (rgbx[..., :3], rgbx[:, ::2, 1:], rgbx[::-1, :, :3]):
        for fmt in ("png", "tiff"):
            got = np.asarray(Image.open(io.BytesIO(encode(view, fmt))).convert("RGB"))
            assert np.array_equal(got, view), fmt
        assert encode(view, "jpeg") == encode(np.ascontiguousarray(view), "jpeg")


def test_audit_thumbnails_are_upright_and_small():
    import base64

    from pipeline.client.audit import _thumb_uri

    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    buf = io.BytesIO()
    Image.fromarray(np.zeros((600, 800), np.uint8)).save(buf, "JPEG", exif=exif.tobytes())
    uri = _thumb_uri(lambda: buf.getvalue(), h=120, gray=True)
    thumb = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert thumb.size == (90, 120)
    assert _thumb_uri(lambda: b"not an image") == ""


def test_our_outputs_open_past_pillows_default_limit_and_sources_within_the_jobs(monkeypatch):
    """The job's --max-pixels (200 M by default) lets a 14,000-px scan through; Pillow's own
    default refuses its output above 179 M pixels (a blank thumbnail in the audit, a broken
    picture on the review page) and warns above 89 M. Scaled down here: 40 x 30 against 500."""
    from pipeline.client.audit import thumbnail

    buf = io.BytesIO()
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(buf, "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # as if Pillow's default were this
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning printed into the audit's output
        assert thumbnail(buf.getvalue(), h=15).size == (20, 15)  # an output: ours
    with pytest.raises(Image.DecompressionBombError):  # a source: within the job's limit
        thumbnail(buf.getvalue(), h=15, max_pixels=500)


def test_one_registry_of_output_formats():
    """CLI choices, extensions, aliases, `same` and the dispatch all come from writers.REGISTRY
    (issue 21): WebP is one entry, and works everywhere a format is named."""
    from pipeline.client.jobspec import JobSpec
    from pipeline.worker.writers import BY_NAME, CHOICES, REGISTRY, by_extension, format_arg

    assert CHOICES == ("png", "jpeg", "tiff", "webp", "same")
    assert JobSpec.__dataclass_fields__["format"].metadata["choices"] == CHOICES
    assert [format_arg(s) for s in ("JPG", "tif", ".webp", "png")] == ["jpeg", "tiff", "webp", "png"]
    assert by_extension("x/out.WEBP").name == "webp" and by_extension("a.bmp") is None
    assert output_format("same", "WEBP") == "webp" and output_format("same", "BMP") == "png"
    rgb16 = (np.arange(24 * 3, dtype=np.uint16).reshape(4, 6, 3) * 900)
    for f in REGISTRY:
        data = encode(rgb16, f.name)
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == f.name.upper() and im.size == (6, 4)
        assert BY_NAME[f.name] is f
    lossless = encode((np.arange(48).reshape(4, 4, 3) * 5).astype(np.uint8), "webp", quality=100)
    with Image.open(io.BytesIO(lossless)) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")),
                              (np.arange(48).reshape(4, 4, 3) * 5).astype(np.uint8))


def test_a_malformed_exif_block_costs_the_metadata_not_the_picture(tmp_path, monkeypatch):
    """A real 1908 scan (DeOldify's bicycles.jpg) carries an APP1 'Exif' block that is not TIFF:
    Pillow's getexif raises 'not a TIFF file'. The picture decodes, with a note."""
    Image.fromarray(np.tile(np.arange(64, dtype=np.uint8), (48, 1))).save(tmp_path / "b.jpg")

    def not_tiff(self):
        raise SyntaxError("not a TIFF file (header b'\\xff\\xff\\xbeZ' not valid)")

    monkeypatch.setattr(Image.Image, "getexif", not_tiff)
    d = decode(tmp_path / "b.jpg")
    assert d.kind == "gray" and (d.width, d.height) == (64, 48)
    assert any(n.startswith("EXIF unreadable, ignored (SyntaxError: not a TIFF") for n in d.notes)


def test_a_faint_cast_is_toned_not_colour():
    """Nearly neutral prints (split toning: cool shadows, warm highlights; a faint tinge) have
    chroma so small that their hues are noise: toned, and colorized (issue 23)."""
    from pipeline.worker.imaging import classify_rgb

    ramp = np.linspace(20, 235, 128)
    gray = np.tile(ramp, (96, 1))
    rgb = np.stack([gray, gray, gray], -1)
    rgb[..., 2] += np.where(gray < 120, 8, -6)  # bluish shadows, yellowish highlights
    rgb[..., 0] += np.where(gray < 120, -3, 4)
    assert classify_rgb(np.clip(rgb, 0, 255).astype(np.uint8)) == "toned"
    strong = rgb.copy()
    strong[:, :64, 0] += 60  # a red half and a blue half: colour, however it is split
    strong[:, 64:, 2] += 60
    assert classify_rgb(np.clip(strong, 0, 255).astype(np.uint8)) == "color"


def test_a_tiffs_layout_is_not_carried_as_exif_its_description_is():
    """A TIFF's IFD is what Pillow reads as its EXIF: strips, bits, compression, photometric. In a
    PNG or JPEG of another depth they would be false; what describes the picture is kept."""
    src = Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20)
    ex = Image.Exif()
    ex[270], ex[315] = "Kirche, 1908", "A. Fotograf"
    buf = io.BytesIO()
    src.save(buf, "TIFF", exif=ex)
    assert {258, 259, 262, 273, 279} <= set(Image.open(io.BytesIO(buf.getvalue())).getexif())
    d = decode(io.BytesIO(buf.getvalue()))
    png = Image.open(io.BytesIO(encode(np.zeros((48, 64, 3), np.uint8), "png", exif=d.exif)))
    kept = png.getexif()
    assert sorted(kept) == [270, 274, 315] and kept[270] == "Kirche, 1908" and kept[274] == 1


def test_a_tiff_pillow_cannot_open_says_what_it_is(tmp_path):
    """Not 'unrecognised format' for a TIFF: what its first page holds, or that it is cut short
    (a libtiff writer puts the directory after the pixels: cut, it is gone)."""
    import tifffile

    g = np.arange(60 * 50, dtype=np.uint16).reshape(50, 60)
    tifffile.imwrite(tmp_path / "la16.tif", np.dstack([g, np.full_like(g, 65535)]),
                     photometric="minisblack", extrasamples=["unassalpha"])
    with pytest.raises(DecodeError, match=r"^a TIFF of 2 samples of 16-bit uint \(minisblack, with "
                                          r"alpha\) that this reader does not open"):
        decode(tmp_path / "la16.tif")
    Image.fromarray((g >> 8).astype(np.uint8)).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    data = (tmp_path / "lzw.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError, match="^damaged or truncated TIFF: it holds no readable image"):
        read_header(tmp_path / "cut.tif")


def test_a_damaged_tiff_is_said_in_its_row_not_in_bare_log_lines(caplog):
    """tifffile's own warning ('<tifffile.TiffPages @1651663207> invalid offset to first page')
    went to a run's log twice per damaged TIFF, naming no file (an operator's trial)."""
    from pipeline.worker.imaging import _tiff_unread

    data = b"II*\x00" + (1651663207).to_bytes(4, "little") + b"\x00" * 100
    assert _tiff_unread(data).startswith("damaged or truncated TIFF")
    assert [r.getMessage() for r in caplog.records if r.name == "tifffile"] == []


def test_finder_files_a_catalogue_names_are_said_to_be_finder_files(tmp_path):
    """Listed in a catalogue made from a zip of a Mac's folder, '._IMG_0001.jpg' and '.DS_Store'
    were 'not an image (unrecognised format)'; what they are tells the curator what to do."""
    import io

    from pipeline.worker.imaging import DecodeError, decode

    apple = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + b"\x00" * 64
    store = b"\x00\x00\x00\x01Bud1" + b"\x00" * 64
    for data, says in ((apple, "a macOS AppleDouble file"), (store, "an operating system's folder file")):
        with pytest.raises(DecodeError, match=says):
            decode(io.BytesIO(data))  # by its bytes: a worker reads them without the name


def test_a_preview_decodes_a_jpeg_reduced_and_never_smaller_than_asked(tmp_path):
    """The review's thumbnails of gray JPEG scans: decoded at 1/2-1/8 of their size (Pillow's
    draft), at least as large as the thumbnail; other formats, and outputs (no preview), whole."""
    a = (np.add.outer(np.arange(1200) // 3, np.arange(1600) // 4) % 256).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "s.jpg", quality=90)
    Image.fromarray(a).save(tmp_path / "s.png")
    assert decode(tmp_path / "s.jpg").gray.shape == (1200, 1600)
    assert decode(tmp_path / "s.jpg", preview=300).gray.shape == (300, 400)  # 1/4: 1/8 is under 300
    assert decode(tmp_path / "s.jpg", preview=150).gray.shape == (150, 200)  # 1/8, the most
    assert decode(tmp_path / "s.jpg", preview=700).gray.shape == (1200, 1600)  # 1/2 would be under
    assert decode(tmp_path / "s.png", preview=300).gray.shape == (1200, 1600)
    small = decode(tmp_path / "s.jpg", preview=300).gray.astype(float)
    whole = np.asarray(Image.fromarray(decode(tmp_path / "s.jpg").gray).resize((400, 300), Image.BOX), float)
    assert np.abs(small - whole).mean() < 3  # the same picture, smaller
