"""Every odd file a scan room produces gets exactly the status it deserves; none stops a shard."""

import errno
import hashlib
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import pipeline.worker.stages as stages
from pipeline.client.jobspec import JobSpec
from pipeline.client.manifest import scan
from pipeline.client.outdir import Outdir
from pipeline.client.state import file_sha256
from pipeline.worker.shard import OutputError, ShardJob


def shard_job(outdir, manifest, ckpt, **spec) -> ShardJob:
    """A shard job as the client makes one: the spec resolved (two threads, unless given)."""
    spec.setdefault("threads", 2)
    return ShardJob(JobSpec(manifest=str(manifest), checkpoint=str(ckpt), **spec),
                    outdir=str(outdir), checkpoint_sha256=file_sha256(ckpt))


def png_declaring(w, h):
    def chunk(k, d):
        return struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def photo():
    from skimage import data

    return data.camera()


def build(root: Path, photo) -> dict[str, tuple[str, str]]:
    """name -> (expected status, a phrase the reason or notes must contain)."""
    g = Image.fromarray(photo[:120, :160])
    exp = {}

    def save(name, im, status="ok", phrase="", **kw):
        im.save(root / name, **kw)
        exp[name] = (status, phrase)

    (root / "empty.jpg").write_bytes(b"")
    exp["empty.jpg"] = ("error", "empty file")
    (root / "page.jpg").write_text("<html><body>404 Not Found</body></html>")
    exp["page.jpg"] = ("error", "not an image")
    (root / "notes.png").write_text("just some text")
    exp["notes.png"] = ("error", "not an image")
    buf = io.BytesIO()
    g.save(buf, "JPEG", quality=90)
    (root / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    exp["truncated.jpg"] = ("error", "truncated")
    buf = io.BytesIO()
    g.save(buf, "PNG")
    (root / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    exp["truncated.png"] = ("error", "truncated")
    b = bytearray(buf.getvalue())
    i = b.index(b"IDAT") + 40
    b[i : i + 16] = b"\xff" * 16  # damage the compressed data (its CRC no longer matches)
    (root / "corrupt chunk.png").write_bytes(bytes(b))
    exp["corrupt chunk.png"] = ("error", "cannot decode")
    (root / "bomb.png").write_bytes(png_declaring(40_000, 40_000))
    exp["bomb.png"] = ("error", "decompression bomb")
    save("tiny.png", g.resize((3, 2)))
    save("strip.png", g.resize((2000, 6)))
    save("odd 97x61.png", g.resize((97, 61)))
    pages = [g, g.rotate(90, expand=True), g]
    pages[0].save(root / "multipage.tif", save_all=True, append_images=pages[1:])
    exp["multipage.tif"] = ("ok", "first of 3 pages (the other 2 not colorized)")
    save("bilevel.png", g.convert("1"))
    save("scan16.tif", Image.fromarray(photo[:120, :160].astype(np.uint16) * 257))
    la = g.convert("LA")
    save("alpha.png", la)
    save("palette.png", g.convert("P"))
    save("cmyk.jpg", g.convert("CMYK"))
    save("progressive.jpg", g, progressive=True, quality=85)
    save("baseline.jpg", g, quality=90, dpi=(300, 300))
    save("scan.webp", g, quality=90)
    save("scan.bmp", g)
    exif = Image.Exif()
    exif[0x0112] = 6
    save("rotated.jpg", g.transpose(Image.ROTATE_90), exif=exif.tobytes())
    save("café ü 写真 no.7.png", g)
    save("back\\slash.png", g)  # legal here; a folder separator to Windows
    save("back_slash.png", g)  # the name the one above would take
    save("colour.png", Image.fromarray(np.dstack([photo[:120, :160], photo[:120, ::-1][:, :160],
                                                  photo[::-1, :160][:120]])),
         status="skipped", phrase="colour image")
    save("gone.png", g, status="error", phrase="file not found")  # deleted after the scan
    (root / "dangling.png").symlink_to("nowhere.png")  # its row has the link's name
    exp["dangling.png"] = ("error", "broken symbolic link: it points to nowhere.png, which is not there")
    save("locked.png", g, status="error", phrase="permission denied")
    # metadata too large or broken costs a note, never the picture
    buf = io.BytesIO()
    g.save(buf, "PNG")
    png, bomb = buf.getvalue(), _chunk(b"zTXt", b"Description\0\0" + zlib.compress(b"A" * (20 << 20)))
    at, end = png.index(b"IDAT") - 4, png.index(b"IEND") - 4
    for name, data in (("caption bomb.png", png[:at] + bomb + png[at:]),
                       ("caption after.png", png[:end] + bomb + png[end:])):
        (root / name).write_bytes(data)
        exp[name] = ("ok", "PNG text 'Description' (over the 1 MB a compressed PNG text or profile may hold here) not read")
    iim = PngInfo()
    iim.add_text("Raw profile type iptc", "\nIPTC profile\n       9\nZZZZ00112\n")
    save("bad iim.png", g, phrase="IPTC-IIM block not carried (unreadable: no dataset in it)", pnginfo=iim)
    save("piped.png", g, phrase="XMP sidecar piped.xmp not read (ValueError: not a regular file")
    os.mkfifo(root / "piped.xmp")  # read, it would block for ever
    save("big sidecar.png", g, phrase="XMP sidecar big sidecar.xmp not read (9.0 MB, more than the 8 MB")
    with open(root / "big sidecar.xmp", "wb") as f:
        f.truncate(9 << 20)
    return exp


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@pytest.fixture(scope="module", params=["cpu", "device"])
def hostile_run(request, tmp_path_factory, photo, ckpt):
    """The same files with gray JPEGs decoded by Pillow, and by torchvision on the net's device
    (here the CPU; nvJPEG on a GPU): the statuses must not depend on it."""
    root = tmp_path_factory.mktemp("hostile")
    src = root / "src"
    src.mkdir()
    exp = build(src, photo)
    man = root / "m.parquet"
    scan([str(src)], man, shard_size=8, progress=False)
    # a manifest edited by someone hostile: rows whose output would leave OUTDIR
    t = pq.read_table(man).to_pylist()
    hostile = {"scan.bmp": "../../escaped", "scan.webp": "/etc/cron.d/x"}  # no other test reads these
    for r in t:
        if r["rel_path"] in hostile:
            r["out_stem"] = hostile[r["rel_path"]]
    escaped = set(hostile)
    pq.write_table(pq.read_table(man).from_pylist(t, schema=pq.read_table(man).schema), man)
    for name in escaped:
        exp[name] = ("error", "unsafe output path")
    (src / "gone.png").unlink()
    out = root / "out"
    job = shard_job(out, man, ckpt, size=32, batch_size=4, jpeg_decode=request.param)
    real_read = Path.read_bytes
    from pipeline.worker.jpegdev import DeviceJpeg

    real_decode = DeviceJpeg.decode
    on_device = []

    def decode_jpegs(self, files):
        on_device.extend(files)
        return real_decode(self, files)

    def read_bytes(self):
        if self.name == "locked.png":  # tests run as root, for whom chmod 000 changes nothing
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_read(self)

    mp = pytest.MonkeyPatch()
    mp.setattr(Path, "read_bytes", read_bytes)
    mp.setattr(DeviceJpeg, "decode", decode_jpegs)
    try:
        shards = sorted(set(pq.read_table(man, columns=["shard"]).column("shard").to_pylist()))
        summaries = [job(s) for s in shards]
    finally:
        mp.undo()
    # upright gray JPEGs only: not the truncated, rotated or CMYK ones
    eligible = [(src / n).read_bytes() for n in ("baseline.jpg", "progressive.jpg")]
    assert sorted(on_device) == (sorted(eligible) if request.param == "device" else [])
    return exp, out, summaries, root


def test_every_hostile_input_gets_its_exact_status(hostile_run):
    exp, out, summaries, root = hostile_run
    rows = {Path(r["source_path"]).name: r for r in Outdir(out).read_results().to_pylist()}
    assert set(rows) == set(exp)
    for name, (status, phrase) in exp.items():
        r = rows[name]
        assert r["status"] == status, (name, r["error"])
        text = f"{r['error'] or ''} {r['notes'] or ''}"
        assert phrase in text, (name, text)
        if status == "error":
            assert r["error"] and r["output_path"] is None
    assert sum(s["images"] for s in summaries) == len(exp)
    # nothing was written outside OUTDIR
    assert not (root / "escaped.png").exists() and not (root.parent / "escaped.png").exists()
    assert not Path("/etc/cron.d/x.png").exists()


def test_odd_inputs_keep_their_shape_and_depth(hostile_run):
    exp, out, _, _ = hostile_run
    rows = {Path(r["source_path"]).name: r for r in Outdir(out).read_results().to_pylist()}
    sizes = {"tiny.png": (3, 2), "strip.png": (2000, 6), "odd 97x61.png": (97, 61),
             "rotated.jpg": (160, 120), "multipage.tif": (160, 120)}
    for name, size in sizes.items():
        with Image.open(out / rows[name]["output_path"]) as im:
            assert im.size == size, name
    assert rows["scan16.tif"]["bits"] == 16 and rows["scan16.tif"]["output_path"].endswith(".png")
    assert rows["café ü 写真 no.7.png"]["output_path"] == "images/café ü 写真 no.7.png"
    assert {rows[n]["output_path"] for n in ("back\\slash.png", "back_slash.png")} == {
        "images/back_slash.png.png", "images/back_slash~1.png"}
    kinds = [rows[n]["input_kind"] for n in ("cmyk.jpg", "palette.png", "bilevel.png", "alpha.png")]
    assert kinds == ["gray"] * 4
    with Image.open(out / rows["baseline.jpg"]["output_path"]) as im:
        assert tuple(round(v) for v in im.info["dpi"]) == (300, 300)


def test_huge_legitimate_scan_is_decoded_once(tmp_path, ckpt, monkeypatch):
    h, w = 8000, 10000
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 60, w, dtype=np.float32)[None, :]
    Image.fromarray((y * 0.7 + x).astype(np.uint8)).save(tmp_path / "huge.jpg", quality=80)
    man = tmp_path / "m.parquet"
    scan([str(tmp_path / "huge.jpg")], man, progress=False)
    calls = []
    real = stages.decode
    monkeypatch.setattr(stages, "decode", lambda *a, **k: calls.append(1) or real(*a, **k))
    job = shard_job(tmp_path / "out", man, ckpt, size=32, batch_size=1, format="jpeg")
    assert job(0)["ok"] == 1 and len(calls) == 1
    r = Outdir(tmp_path / "out").read_results().to_pylist()[0]
    with Image.open(tmp_path / "out" / r["output_path"]) as im:
        assert im.size == (w, h)


def test_output_write_failure_fails_the_shard_uncommitted(tmp_path, ckpt, photo, monkeypatch):
    for i in range(3):
        Image.fromarray(photo[i * 10 : i * 10 + 40, :40]).save(tmp_path / f"{i}.png")
    man = tmp_path / "m.parquet"
    scan([str(tmp_path)], man, shard_size=3, progress=False)

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(stages.Store, "write_atomic", lambda self, rel, data: full(rel, data))
    job = shard_job(tmp_path / "out", man, ckpt, size=32)
    with pytest.raises(OutputError, match="No space left on device"):
        job(0)
    assert not os.path.exists(Outdir(tmp_path / "out").shard_file(0))
    assert not list((tmp_path / "out").rglob("*.tmp*"))
    assert os.path.exists(man)


def _gray_jpegs(root: Path, photo, n=3) -> Path:
    root.mkdir()
    for i in range(n):
        Image.fromarray(photo[i * 40 : i * 40 + 150, :200]).save(root / f"s{i}.jpg", quality=90)
    man = root.parent / f"{root.name}.parquet"
    scan([str(root)], man, shard_size=8, progress=False)
    return man


def _outputs(out: Path) -> dict[str, bytes]:
    return {Path(r["source_path"]).name: (out / r["output_path"]).read_bytes()
            for r in Outdir(out).read_results().to_pylist() if r["status"] == "ok"}


def test_device_decode_falls_back_to_pillow_per_image(tmp_path, ckpt, photo, monkeypatch):
    """A file the device decoder refuses (None) or gets wrong (another size) goes through Pillow,
    giving exactly the bytes a Pillow-only run gives; the batch's other files are unaffected."""
    from pipeline.worker.jpegdev import DeviceJpeg

    man = _gray_jpegs(tmp_path / "src", photo)
    kw = dict(size=32, batch_size=4, format="jpeg")
    shard_job(tmp_path / "cpu", man, ckpt, jpeg_decode="cpu", **kw)(0)
    real = DeviceJpeg.decode

    def flaky(self, files):
        got = real(self, files)
        return [None, got[1][:7], got[2]]

    monkeypatch.setattr(DeviceJpeg, "decode", flaky)
    s = shard_job(tmp_path / "dev", man, ckpt, jpeg_decode="device", **kw)(0)
    assert s["ok"] == 3 and s["error"] == 0
    cpu, dev = _outputs(tmp_path / "cpu"), _outputs(tmp_path / "dev")
    assert cpu["s0.jpg"] == dev["s0.jpg"] and cpu["s1.jpg"] == dev["s1.jpg"]
    a, b = (np.asarray(Image.open(io.BytesIO(x["s2.jpg"])), dtype=int) for x in (cpu, dev))
    assert a.shape == b.shape and np.abs(a - b).mean() < 3  # torch's resize for the net input


def test_repair_leaves_the_rows_it_does_not_redo_as_committed(tmp_path, ckpt, photo, monkeypatch):
    """A repair decodes the whole shard again (identical batches), but only the images it redoes
    get new rows: also a file the device refused and Pillow could not read either, whose fresh
    error row once replaced the committed one."""
    from pipeline.worker.jpegdev import DeviceJpeg

    man = _gray_jpegs(tmp_path / "src", photo)
    real_decode = stages.decode

    def decode(src, **kw):  # s1 is unreadable on the host too
        data = src.getvalue()
        if data == (tmp_path / "src" / "s1.jpg").read_bytes():
            raise stages.DecodeError("cannot decode: the JPEG data is corrupt (test)")
        return real_decode(src, **kw)

    monkeypatch.setattr(DeviceJpeg, "decode", lambda self, files: [None] * len(files))
    monkeypatch.setattr(stages, "decode", decode)
    job = shard_job(tmp_path / "out", man, ckpt, size=32, batch_size=4, jpeg_decode="device")
    assert job(0)["error"] == 1
    before = {Path(r["source_path"]).name: r for r in Outdir(tmp_path / "out").read_results().to_pylist()}
    s = job(0, only=frozenset({before["s0.jpg"]["image_id"]}))
    after = {Path(r["source_path"]).name: r for r in Outdir(tmp_path / "out").read_results().to_pylist()}
    assert s["images"] == 1 and s["ok"] == 1
    assert after["s1.jpg"] == before["s1.jpg"] and after["s2.jpg"] == before["s2.jpg"]
    assert after["s0.jpg"]["seconds"] != before["s0.jpg"]["seconds"]  # that one was redone


@pytest.mark.gpu
def test_nvjpeg_run_matches_pillow_run(tmp_path, ckpt, photo):
    man = _gray_jpegs(tmp_path / "src", photo)
    kw = dict(size=32, batch_size=4, format="jpeg", device="cuda")
    for mode in ("cpu", "device"):  # device on CUDA: nvJPEG
        assert shard_job(tmp_path / mode, man, ckpt, jpeg_decode=mode, **kw)(0)["ok"] == 3
    cpu, gpu = _outputs(tmp_path / "cpu"), _outputs(tmp_path / "device")
    assert set(cpu) == set(gpu) == {"s0.jpg", "s1.jpg", "s2.jpg"}
    for name in cpu:
        a, b = (np.asarray(Image.open(io.BytesIO(x[name])), dtype=int) for x in (cpu, gpu))
        assert a.shape == b.shape and np.abs(a - b).mean() < 3, name


def test_a_jpeg_the_device_refuses_keeps_its_sidecars_record_and_one_it_decodes_says_its_size(
        tmp_path, ckpt, photo, monkeypatch):
    """The Pillow fallback reads the picture anew: its XMP sidecar is read into it again (the
    rights were lost while the row said the sidecar was read). A JPEG decoded on the device
    says its own size in EXIF (a scanner's PixelXDimension of another crop was carried)."""
    from pipeline.worker.jpegdev import DeviceJpeg

    root = tmp_path / "src"
    root.mkdir()
    exif = Image.Exif()
    exif[0x8769] = {0xA002: 9999, 0xA003: 8888}  # PixelX/YDimension, in the Exif sub-IFD
    for i in range(2):
        Image.fromarray(photo[:150, :200]).save(root / f"s{i}.jpg", quality=90, exif=exif)
    (root / "s0.jpg.xmp").write_bytes(
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:rights><rdf:Alt>'
        b'<rdf:li xml:lang="x-default">Stadtarchiv</rdf:li></rdf:Alt></dc:rights></rdf:Description></rdf:RDF></x:xmpmeta>')
    man = tmp_path / "m.parquet"
    scan([str(root)], man, shard_size=8, progress=False)
    real = DeviceJpeg.decode
    monkeypatch.setattr(DeviceJpeg, "decode", lambda self, files: [None, *real(self, files[1:])])
    s = shard_job(tmp_path / "out", man, ckpt, size=32, batch_size=4, jpeg_decode="device", format="jpeg")(0)
    assert s["ok"] == 2
    rows = {Path(r["source_path"]).name: r for r in Outdir(tmp_path / "out").read_results().to_pylist()}
    assert rows["s0.jpg"]["notes"].count("XMP sidecar s0.jpg.xmp read") == 1
    assert b"Stadtarchiv" in Image.open(tmp_path / "out" / rows["s0.jpg"]["output_path"]).info["xmp"]
    for name in ("s0.jpg", "s1.jpg"):
        got = Image.open(tmp_path / "out" / rows[name]["output_path"]).getexif().get_ifd(0x8769)
        assert (got[0xA002], got[0xA003]) == (200, 150), name


def test_a_png_keeps_every_text_pillow_reads_and_says_why_each_other_was_left(photo, monkeypatch):
    """A plain text of any size is Pillow's to read (only a compressed one is held to 1 MB): one
    beside a caption bomb was left out with it, said to be 'over 1 MB'. Texts past the total
    Pillow allows are said as such."""
    from PIL import PngImagePlugin

    from pipeline.worker.imaging import decode, read_header

    buf = io.BytesIO()
    Image.fromarray(photo[:64, :64]).save(buf, "PNG")
    png = buf.getvalue()
    at = png.index(b"IDAT") - 4
    bomb = _chunk(b"zTXt", b"Description\0\0" + zlib.compress(b"A" * (3 << 20)))
    plain = _chunk(b"tEXt", b"Comment\0" + b"c" * (2 << 20)) + _chunk(b"tEXt", b"Title\0" + b"t" * (2 << 20))
    data = png[:at] + plain + bomb + png[at:]
    d = decode(io.BytesIO(data))
    assert len(d.texts["Comment"]) == len(d.texts["Title"]) == 2 << 20
    assert d.notes[-1] == ("PNG text 'Description' (over the 1 MB a compressed PNG text or profile may "
                           "hold here) not read")
    monkeypatch.setattr(PngImagePlugin, "MAX_TEXT_MEMORY", 3 << 20)
    d = decode(io.BytesIO(data))
    assert len(d.texts["Comment"]) == 2 << 20 and "Title" not in d.texts
    assert d.notes[-1] == ("PNG text 'Title' (past the 3 MB of text a PNG may hold here); text 'Description' "
                           "(over the 1 MB a compressed PNG text or profile may hold here) not read")
    assert read_header(io.BytesIO(data)).width == 64


def test_a_sidecar_that_is_no_file_is_not_counted_as_read_by_the_scan(tmp_path, photo, capsys):
    """A pipe or a broken link of a sidecar's name is its picture's, but no record is read from
    it: the scan said it was 'read with' its picture."""
    from pipeline.cli import main

    root = tmp_path / "scans"
    root.mkdir()
    for n in "abc":
        Image.fromarray(photo[:40, :40]).save(root / f"{n}.png")
    (root / "a.xmp").write_text("<x:xmpmeta/>")
    os.mkfifo(root / "b.xmp")
    (root / "c.png.xmp").symlink_to("nowhere.xmp")
    assert main(["scan", str(root), "-o", str(tmp_path / "m.parquet")]) == 0
    err = capsys.readouterr().err
    assert "1 XMP sidecar beside its picture: read with it" in err
    assert (f"2 XMP sidecars beside their pictures are no file to read ({root}/b.xmp: not a regular file "
            f"(a pipe, a socket, a device); {root}/c.png.xmp: a broken symbolic link") in err, err
    (root / "a.xmp").unlink()  # paired, then gone: said so (it was "None")
    (root / "other").mkdir()
    Image.fromarray(photo[:40, :40]).save(root / "other" / "a.png")
    (root / "other" / "a.xmp").write_text("<x:xmpmeta/>")  # a sidecar of that name elsewhere
    assert main(["scan", str(root), "-o", str(tmp_path / "m.parquet")]) == 0
    assert f"{root}/a.xmp: gone since the scan that paired it" in capsys.readouterr().err


def test_an_output_made_with_its_sidecar_missing_is_not_outdated_when_a_scan_pairs_none():
    """A row made while its paired sidecar was gone holds "missing"; a fresh scan pairs none:
    the same (a redo would write the same file), not "edited since"."""
    import pyarrow as pa

    from pipeline.client.audit import _sidecars_edited

    man = pa.table({"image_id": ["a", "b"], "path": ["/x/a.png", "/x/b.png"], "xmp_sidecar": [None, None]})
    rows = [{"image_id": "a", "source_path": "/x/a.png", "sidecar_sha256": "missing"},
            {"image_id": "b", "source_path": "/x/b.png", "sidecar_sha256": "ab" * 32}]
    assert _sidecars_edited(man, "/x/m.parquet", rows) == ["/x/b.png"]  # b's was read: removed since


def test_a_sidecar_too_large_to_read_is_known_by_its_size_and_time(tmp_path):
    """One over the XMP limit is never read, at the run or by audit --check-inputs (a sparse
    100 GB .xmp was hashed whole for every image): its size and time stand for it."""
    from pipeline.client.manifest import sidecar_digest

    big = tmp_path / "a.xmp"
    with open(big, "wb") as f:
        f.truncate(9 << 20)
    was = sidecar_digest(str(big))
    assert was.startswith(f"too large: {9 << 20} bytes, modified ")
    os.utime(big, ns=(1, 10**18))
    assert sidecar_digest(str(big)) not in (was, "")
    big.write_bytes(b"<x/>")
    assert sidecar_digest(str(big)) == hashlib.sha256(b"<x/>").hexdigest()
