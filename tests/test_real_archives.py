"""Real archives: no file stops a run, every format writes, transparency and toned scans come out
right, and the originals and the archive are guarded (issue 12)."""

import csv
import errno
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tifffile
from conftest import on_cluster
from PIL import Image

import pipeline.worker.stages as stages
from pipeline.client.jobspec import JobSpec
from pipeline.client.manifest import scan
from pipeline.client.outdir import Outdir
from pipeline.client.state import file_sha256
from pipeline.worker.imaging import DecodeError, classify_rgb, decode
from pipeline.worker.shard import ShardJob
from pipeline.worker.writers import encode

CLUSTER = ""  # where the runs of a test asking for `warm` go (conftest.warm); else a local cluster


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pipeline", *on_cluster(args, CLUSTER)],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def photo():
    from skimage import data

    return data.camera()[:120, :160].copy()


def camera_exif() -> bytes:
    """EXIF as a camera writes it: IFD0 tags, an Exif sub-IFD and a GPS IFD."""
    ex = Image.Exif()
    ex[271], ex[272], ex[306] = "Nikon", "F3 scan", "2024:05:01 10:00:00"
    ex[0x8769] = {36867: "1961:07:14 09:30:00", 33434: (1, 125)}
    ex[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0)}
    return ex.tobytes()


def exif_with_string_resolution() -> bytes:
    """Raw EXIF whose XResolution is ASCII text, as some scanners write it (Pillow will not
    write such a thing, so the bytes are laid out by hand)."""
    text = b"seventy-two\x00"
    ifd = (struct.pack("<H", 1) + struct.pack("<HHII", 282, 2, len(text), 8 + 2 + 12 + 4)
           + struct.pack("<I", 0) + text)
    return b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + ifd


def huge_dpi_exif() -> bytes:
    ex = Image.Exif()
    ex[282], ex[283], ex[296] = 4294967295, 4294967295, 2  # inches
    return ex.tobytes()


def srgb_icc() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


# --- every output format on ordinary scans ------------------------------------------------------


@pytest.mark.parametrize("bits", [8, 16])
def test_tiff_carries_camera_exif_and_icc_as_real_tags(bits):
    rgb = np.random.default_rng(0).integers(0, 255, (40, 60, 3)).astype(np.uint8)
    if bits == 16:
        rgb = rgb.astype(np.uint16) * 257
    notes: list[str] = []
    icc = srgb_icc()
    data = encode(rgb, "tiff", dpi=(300.0, 300.0), icc=icc, exif=camera_exif(), notes=notes)
    with tifffile.TiffFile(io.BytesIO(data)) as t:
        page = t.pages[0]
        assert np.array_equal(page.asarray(), rgb)
        tags = {tag.name: tag.value for tag in page.tags}
    assert tags["Make"] == "Nikon" and tags["Model"] == "F3 scan"
    assert tags["DateTime"] == "2024:05:01 10:00:00"
    assert bytes(tags["InterColorProfile"]) == icc
    assert tags["XResolution"] == (300, 1)
    assert any("Exif and GPS sub-IFD not carried" in n for n in notes)
    with Image.open(io.BytesIO(data)) as im:  # and libtiff, through Pillow, reads it too
        im.load()
        assert im.size == (60, 40)


def test_a_tiff_output_keeps_a_masters_document_and_page_names_and_names_what_it_leaves():
    """A glass-plate master's DocumentName and PageName are the archive's: a TIFF output keeps
    them as tags (a trial's went without a word); an IFD0 tag it has no place for is named."""
    ex = Image.Exif()
    ex[269], ex[285], ex[316] = "Glasplatte 001", "Seite 2", "Scanstation 3"
    ex[318] = (0.3127, 0.329)  # WhitePoint, and Windows Explorer's title: no place in the output
    ex[0x9C9B] = "Omas Hochzeit".encode("utf-16-le") + b"\0\0"
    notes: list[str] = []
    data = encode(np.zeros((8, 8, 3), np.uint8), "tiff", exif=ex.tobytes(), notes=notes)
    with tifffile.TiffFile(io.BytesIO(data)) as t:
        tags = {tag.name: tag.value for tag in t.pages[0].tags}
    assert (tags["DocumentName"], tags["PageName"], tags["HostComputer"]) == (
        "Glasplatte 001", "Seite 2", "Scanstation 3")
    assert notes == ["TIFF output: EXIF WhitePoint, XPTitle not carried"]


def test_a_tiff_output_does_not_take_the_pictures_date_as_its_own():
    """TIFF's DateTime is when the file was made: the 1961 picture's date is not this output's."""
    ex = Image.Exif()
    ex[0x8769] = {36867: "1961:07:14 09:30:00"}
    data = encode(np.zeros((8, 8, 3), np.uint8), "tiff", exif=ex.tobytes(), notes=[])
    with tifffile.TiffFile(io.BytesIO(data)) as t:
        assert "DateTime" not in t.pages[0].tags


@pytest.mark.parametrize("fmt", ["png", "jpeg", "tiff", "webp"])
def test_a_creators_name_and_rights_in_utf8_exif_come_out_as_written(tmp_path, photo, fmt):
    """Pillow reads EXIF text as latin-1 and writes it as ASCII: "Zofia Łęcka" became
    "Zofia ????cka" in every output. The bytes the source holds are the record."""
    ex = Image.Exif()
    ex[315], ex[33432] = "Zofia Łęcka".encode(), "© Nationalbibliothek, CC BY-SA 4.0".encode()
    ex[270] = "Marktplatz in Łódź".encode()
    ex[0x8769] = {36867: "1923:05:01 10:00:00"}
    Image.fromarray(photo).save(tmp_path / "scan.jpg", exif=ex.tobytes())
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-ExifIFD:OwnerName=Jürgen",
                    tmp_path / "scan.jpg"], check=True)  # as ASCII-typed text, as tools write it
    d = decode(tmp_path / "scan.jpg")
    assert "EXIF CameraOwnerName not carried (non-ASCII text in a sub-IFD)" in d.notes
    notes: list[str] = []
    data = encode(np.dstack([d.gray] * 3), fmt, exif=d.exif, notes=notes)
    got = Image.open(io.BytesIO(data)).getexif()
    text = {t: got[t].encode("latin-1").decode("utf-8") for t in (315, 33432, 270)}
    assert text == {315: "Zofia Łęcka", 33432: "© Nationalbibliothek, CC BY-SA 4.0",
                    270: "Marktplatz in Łódź"}
    if fmt != "tiff":  # the sub-IFD's ASCII text, as it was
        assert got.get_ifd(0x8769)[36867] == "1923:05:01 10:00:00"


def test_a_resolution_the_scan_never_stated_is_not_invented(tmp_path, photo):
    """Pillow says 72 dpi for a JPEG whose JFIF gives only an aspect ratio and whose EXIF no
    resolution, and 1 dpi for a TIFF without one: the output must not claim either."""
    ex = Image.Exif()
    ex[315] = "A. Fotograf"
    Image.fromarray(photo).save(tmp_path / "ratio.jpg", exif=ex.tobytes())  # JFIF unit 0, 1:1
    assert Image.open(tmp_path / "ratio.jpg").info["dpi"] == (72, 72)  # Pillow's guess
    assert decode(tmp_path / "ratio.jpg").dpi is None
    Image.fromarray(photo).save(tmp_path / "600.jpg", dpi=(600, 600))
    assert decode(tmp_path / "600.jpg").dpi == (600.0, 600.0)
    Image.fromarray(photo).save(tmp_path / "600.png", dpi=(600, 600))  # 23622 pixels a metre
    assert decode(tmp_path / "600.png").dpi == (600.0, 600.0)  # not 599.9988
    ex[282], ex[283], ex[296] = 2, 1, 1  # a 2:1 pixel aspect, "no absolute unit"
    Image.fromarray(photo).save(tmp_path / "aspect.tif", exif=ex.tobytes())
    assert decode(tmp_path / "aspect.tif").dpi is None


def test_16bit_rgb_gray_scans_stay_16bit(tmp_path, photo):
    g16 = photo.astype(np.uint16) * 257 + 100
    rgb16 = np.dstack([g16] * 3)
    tifffile.imwrite(tmp_path / "flatbed48.tif", rgb16, photometric="rgb")
    import imagecodecs

    (tmp_path / "flatbed48.png").write_bytes(imagecodecs.png_encode(rgb16))
    rgba = np.dstack([rgb16, np.full_like(g16, 65535)])
    (tmp_path / "flatbed64.png").write_bytes(imagecodecs.png_encode(rgba))
    for name in ("flatbed48.tif", "flatbed48.png", "flatbed64.png"):
        d = decode(tmp_path / name)
        assert d.bits == 16 and d.kind == "gray", name
        assert np.abs(d.gray.astype(int) - g16).max() <= 1, name  # all 16 bits, not 8


# --- transparency and toned scans ---------------------------------------------------------------


def test_transparency_is_flattened_on_white(tmp_path, photo):
    a = np.full(photo.shape, 255, np.uint8)
    a[:, :40] = 0  # the left quarter is transparent
    Image.fromarray(np.dstack([photo, a]), "LA").save(tmp_path / "la.png")
    Image.fromarray(np.dstack([photo, photo, photo, a]), "RGBA").save(tmp_path / "rgba.png")
    p = Image.fromarray(photo).convert("P")
    p.info["transparency"] = int(np.asarray(p)[0, 0])  # the top-left pixel's entry is transparent
    p.save(tmp_path / "trns.png", transparency=int(np.asarray(p)[0, 0]))
    for name in ("la.png", "rgba.png"):
        d = decode(tmp_path / name)
        assert d.kind == "gray", name  # not skipped as colour
        assert (d.gray[:, :40] == 255).all(), name
        assert "alpha flattened on white" in d.notes
    d = decode(tmp_path / "trns.png")
    assert d.kind == "gray" and d.gray[0, 0] == 255


def stripes() -> np.ndarray:
    a = np.zeros((60, 90, 3), np.uint8)
    a[:, :30, 0] = 255
    a[:, 30:60, 1] = 255
    a[:, 60:, 2] = 255
    return a


def color_chart() -> np.ndarray:
    rng = np.random.default_rng(3)
    patches = rng.integers(0, 255, (4, 6, 3)).astype(np.uint8)
    return np.kron(patches, np.ones((15, 15, 1), np.uint8))


def toned(photo, tint) -> np.ndarray:
    t = photo.astype(np.float32)[..., None] / 255.0
    return np.clip(255 * t * np.array(tint, np.float32) + 8 * t, 0, 255).astype(np.uint8)


def test_toned_means_one_hue_family(photo):
    assert classify_rgb(stripes()) == "color"
    assert classify_rgb(color_chart()) == "color"
    assert classify_rgb(toned(photo, (1.0, 0.85, 0.62))) == "toned"  # sepia
    assert classify_rgb(toned(photo, (0.35, 0.6, 1.0))) == "toned"  # cyanotype
    assert classify_rgb(np.dstack([photo] * 3)) == "gray"


# --- reasons a person can act on ----------------------------------------------------------------


def jpeg_bytes(photo, **kw) -> bytes:
    b = io.BytesIO()
    Image.fromarray(photo).save(b, "JPEG", **kw)
    return b.getvalue()


def test_reasons_say_what_failed(tmp_path, photo):
    d = bytearray(jpeg_bytes(photo))
    d[d.index(b"\xff\xc0") + 4] = 12  # the start-of-frame's sample precision
    (tmp_path / "twelve.jpg").write_bytes(bytes(d))
    with pytest.raises(DecodeError, match="12-bit JPEG: not supported"):
        decode(tmp_path / "twelve.jpg")
    b = io.BytesIO()
    Image.fromarray(photo).save(b, "TIFF", compression="tiff_adobe_deflate")
    t = bytearray(b.getvalue())
    t[20:60] = b"\x13" * 40  # inside the compressed strip
    (tmp_path / "corrupt.tif").write_bytes(bytes(t))
    with pytest.raises(DecodeError, match="the TIFF data is corrupt"):
        decode(tmp_path / "corrupt.tif")


def test_png_with_a_bad_checksum_is_reported(tmp_path, photo):
    b = io.BytesIO()
    Image.fromarray(photo).save(b, "PNG")
    d = bytearray(b.getvalue())
    i = d.index(b"IDAT")
    n = int.from_bytes(d[i - 4 : i], "big")
    d[i + 4 + n] ^= 0xFF  # the CRC after IDAT's data: the pixels still decode
    (tmp_path / "crc.png").write_bytes(bytes(d))
    out = decode(tmp_path / "crc.png")
    assert any("damaged file: PNG checksum mismatch in IDAT" in n for n in out.notes)


def test_malformed_exif_and_dpi_are_dropped_not_fatal(tmp_path, photo):
    (tmp_path / "exif.jpg").write_bytes(jpeg_bytes(photo, exif=exif_with_string_resolution()))
    d = decode(tmp_path / "exif.jpg")
    assert d.exif is None and any("EXIF not carried (malformed: TypeError" in n for n in d.notes)
    for fmt in ("png", "jpeg", "tiff"):
        encode(np.dstack([photo] * 3), fmt, d.dpi, d.icc_profile, d.exif, notes=[])
    (tmp_path / "dpi.jpg").write_bytes(jpeg_bytes(photo, exif=huge_dpi_exif()))
    d = decode(tmp_path / "dpi.jpg")
    assert d.dpi is None and any("implausible DPI" in n for n in d.notes)
    encode(np.dstack([photo] * 3), "png", d.dpi, d.icc_profile, d.exif)
    Image.fromarray(photo).save(tmp_path / "bare.tif")  # no resolution tags: Pillow says 1 dpi
    Image.fromarray(photo).save(tmp_path / "300.tif", dpi=(300, 300))
    assert decode(tmp_path / "bare.tif").dpi is None and decode(tmp_path / "300.tif").dpi == (300, 300)


# --- one file never stops a shard ---------------------------------------------------------------


def test_an_exception_nobody_named_becomes_the_images_row(tmp_path, photo, ckpt, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        Image.fromarray(np.roll(photo, i * 7, axis=1)).save(src / f"s{i}.png")
    man = tmp_path / "m.parquet"
    scan([str(src)], man, shard_size=4, progress=False)
    from pipeline.worker import writers

    real_decode, real_encode = stages.decode, writers.encode

    def decode(path, **kw):
        d = real_decode(path, **kw)
        if d.gray[0, 0] == np.roll(photo, 7, axis=1)[0, 0] and d.gray.sum() == np.roll(photo, 7, axis=1).sum():
            raise TypeError("bad operand type for abs(): 'str'")
        return d

    calls = []

    def encode(rgb, fmt, dpi=None, icc=None, exif=None, **kw):
        calls.append(fmt)
        if len(calls) == 1:  # the first image's metadata chokes the writer once
            raise TypeError("a writer that fails on its metadata")
        if len(calls) in (3, 4):  # and the next image's fails even without metadata
            raise KeyError("an encoder that fails outright")
        return real_encode(rgb, fmt, dpi, icc, exif, **kw)

    monkeypatch.setattr(stages, "decode", decode)
    monkeypatch.setattr(writers, "encode", encode)
    job = ShardJob(JobSpec(manifest=str(man), checkpoint=ckpt, size=32, batch_size=2, threads=1),
                   outdir=str(tmp_path / "out"), checkpoint_sha256=file_sha256(ckpt))
    s = job(0)
    assert s["images"] == 4
    rows = {Path(r["source_path"]).name: r for r in Outdir(tmp_path / "out").read_results().to_pylist()}
    assert rows["s1.png"]["status"] == "error"
    assert rows["s1.png"]["error"] == "cannot decode: TypeError: bad operand type for abs(): 'str'"
    statuses = sorted(r["status"] for r in rows.values())
    assert statuses == ["error", "error", "ok", "ok"]
    errors = [r["error"] for r in rows.values() if r["status"] == "error"]
    assert any("KeyError" in e for e in errors)
    notes = [r["notes"] or "" for r in rows.values() if r["status"] == "ok"]
    assert any("metadata not carried (TypeError" in n for n in notes)


def test_scan_survives_a_malformed_tiff_header(tmp_path, photo, monkeypatch):
    import pipeline.client.manifest as manifest_mod

    Image.fromarray(photo).save(tmp_path / "a.tif")
    Image.fromarray(photo).save(tmp_path / "b.tif")
    real = manifest_mod.read_header

    def read_header(path, max_pixels):
        if str(path).endswith("b.tif"):
            raise TypeError("Missing dimensions")
        return real(path, max_pixels)

    monkeypatch.setattr(manifest_mod, "read_header", read_header)
    t = scan([str(tmp_path)], tmp_path / "m.parquet", progress=False)
    errs = dict(zip(t.column("rel_path").to_pylist(), t.column("scan_error").to_pylist(), strict=True))
    assert errs == {"a.tif": None, "b.tif": "unreadable header: TypeError: Missing dimensions"}


def test_two_shards_failing_together_end_the_run_in_one_line(tmp_path, photo):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        Image.fromarray(photo).save(src / f"s{i}.png")
    man = tmp_path / "m.parquet"
    scan([str(src)], man, shard_size=2, progress=False)
    out = tmp_path / "out"
    for name in ("s0.png", "s2.png"):  # a folder where each shard's first output must go
        (out / "images" / name).mkdir(parents=True)
    r = run_cli("run", "--manifest", man, "-o", out, "--retries", "0", "-q", "--size", "32",
                "--workers", "2", "--threads", "1")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "failed" in r.stderr and f"resume with: colorize run -o {out}" in r.stderr


# --- guard the originals and the archive --------------------------------------------------------


def test_image_refuses_to_overwrite_its_input(tmp_path, photo):
    Image.fromarray(photo).save(tmp_path / "scan.jpg")
    before = (tmp_path / "scan.jpg").read_bytes()
    r = run_cli("image", tmp_path / "scan.jpg", tmp_path / "." / "scan.jpg")
    assert r.returncode == 2 and "is the input" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "scan.jpg").read_bytes() == before


def test_image_replaces_only_its_own_outputs_without_force(tmp_path, photo, ckpt, capsys):
    """An OUT that exists and that colorize did not write (another scan, most likely) is refused;
    an earlier quick look is replaced; --force replaces anything but the input."""
    from pipeline.cli import main

    Image.fromarray(photo).convert("L").save(tmp_path / "scan.png")
    Image.fromarray(photo).convert("L").save(tmp_path / "other.png")
    other = (tmp_path / "other.png").read_bytes()
    args = ["--checkpoint", ckpt, "--size", "32", "--device", "cpu"]
    assert main(["image", str(tmp_path / "scan.png"), str(tmp_path / "other.png"), *args]) == 2
    err = capsys.readouterr().err
    assert "other.png exists and colorize did not write it" in err and "--force" in err
    assert (tmp_path / "other.png").read_bytes() == other
    (tmp_path / "look.png").write_bytes(b"an earlier look, archive-colorizer in its metadata")
    assert main(["image", str(tmp_path / "scan.png"), str(tmp_path / "look.png"), *args]) == 0
    assert Image.open(tmp_path / "look.png").size == Image.open(tmp_path / "scan.png").size
    assert main(["image", str(tmp_path / "scan.png"), str(tmp_path / "other.png"), *args, "--force"]) == 0
    assert b"archive-colorizer" in (tmp_path / "other.png").read_bytes()
    # an output of a job, ours as it is, is the job's: its audit checks it
    job = tmp_path / "job"
    (job / "results").mkdir(parents=True)
    (job / "job.json").write_text("{}")
    (job / "images").mkdir()
    capsys.readouterr()
    assert main(["image", str(tmp_path / "scan.png"), str(job / "images" / "scan.png"), *args]) == 2
    assert f"is inside the job in {job}, whose audit checks each output" in capsys.readouterr().err


def test_outdir_inside_the_sources_is_refused_and_outdirs_are_not_scanned(tmp_path, photo):
    src = tmp_path / "scans"
    (src / "1950s").mkdir(parents=True)
    Image.fromarray(photo).save(src / "1950s" / "a.png")
    man = tmp_path / "m.parquet"
    scan([str(src)], man, progress=False)
    top = os.path.realpath(src)
    r = run_cli("run", "--manifest", man, "-o", src / "colour", "--dry-run")
    assert r.returncode == 2 and f"inside the source folder {top}:" in r.stderr, r.stderr
    r = run_cli("run", "--manifest", man, "-o", src / "1950s", "--dry-run")  # the scanned folder named
    assert r.returncode == 2 and f"1950s is inside the source folder {top}:" in r.stderr, r.stderr
    # two folders scanned: an OUTDIR beside them, in a parent never scanned, is apart (a trial's
    # was refused as "inside the source folder" that parent)
    (tmp_path / "b").mkdir()
    Image.fromarray(photo).save(tmp_path / "b" / "c.png")
    scan([str(src / "1950s"), str(tmp_path / "b")], tmp_path / "two.parquet", progress=False)
    r = run_cli("run", "--manifest", tmp_path / "two.parquet", "-o", tmp_path / "colour", "--dry-run")
    assert r.returncode == 0, r.stderr
    r = run_cli("run", "--manifest", tmp_path / "two.parquet", "-o", tmp_path / "b" / "colour", "--dry-run")
    assert r.returncode == 2 and f"inside the source folder {os.path.realpath(tmp_path / 'b')}:" in r.stderr, r.stderr
    # scanned one after the other into one manifest: the first folder still holds the job's files
    scan([str(src)], tmp_path / "grown.parquet", progress=False)
    scan([str(tmp_path / "b")], tmp_path / "grown.parquet", progress=False, extend=str(tmp_path / "grown.parquet"))
    r = run_cli("run", "--manifest", tmp_path / "grown.parquet", "-o", src / "colour", "--dry-run")
    assert r.returncode == 2 and f"inside the source folder {top}:" in r.stderr, r.stderr
    # an OUTDIR made elsewhere and later moved under the scans is left out by scan, and said
    (src / "old-run" / "results").mkdir(parents=True)
    (src / "old-run" / "job.json").write_text("{}")
    Image.fromarray(photo).save(src / "old-run" / "a.png")
    r = run_cli("scan", src, "-o", tmp_path / "m2.parquet", "-q")
    assert r.returncode == 0 and "left out" in r.stderr and "old-run" in r.stderr
    paths = pq.read_table(tmp_path / "m2.parquet").column("path").to_pylist()
    assert len(paths) == 1 and paths[0].endswith("scans/1950s/a.png")


def test_repair_moves_its_altered_outputs_aside_and_leaves_the_users_files(tmp_path, photo, ckpt, warm):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        Image.fromarray(np.roll(photo, i, axis=0)).save(src / f"s{i}.png")
    man = tmp_path / "m.parquet"
    scan([str(src)], man, shard_size=2, progress=False)
    out = tmp_path / "out"
    args = ("run", "--manifest", man, "-o", out, "-q", "--size", "32", "--checkpoint", ckpt)
    assert run_cli(*args).returncode == 0
    retouched = out / "images" / "s0 retouched.png"
    retouched.write_bytes(b"a curator's work")
    ours = out / "images" / "s1.png"
    original_output = ours.read_bytes()
    ours.write_bytes(original_output[:-10] + b"edited by hand"[:10])
    rows = sorted((out / "results").glob("*.parquet"))[0].read_bytes()
    (src / "s1.png").rename(tmp_path / "s1.png")  # nothing to make it again from: left alone,
    (out / "images" / "s0.png").unlink()  # not turned into an error row, nor the output moved
    (src / "s0.png").rename(tmp_path / "s0.png")
    r = run_cli(*args, "--repair")
    assert r.returncode == 0 and (f"left 2 images as they are (rows and outputs untouched), no "
                                  f"original to make them again from: {src / 's0.png'} is not there "
                                  "now (moved or deleted since the scan?); put it back") in r.stdout, r.stdout
    assert sorted((out / "results").glob("*.parquet"))[0].read_bytes() == rows
    assert ours.read_bytes().endswith(b"edited by ") and not (out / "quarantine").exists()
    for name in ("s0.png", "s1.png"):
        (tmp_path / name).rename(src / name)
    r = run_cli(*args, "--repair")
    assert r.returncode == 0, r.stderr
    assert retouched.read_bytes() == b"a curator's work"  # not provably ours: left where it is
    assert not (out / "quarantine" / "images" / "s0 retouched.png").exists()
    assert (out / "quarantine" / "images" / "s1.png").read_bytes().endswith(b"edited by ")
    assert ours.read_bytes() == original_output  # written again, the same bytes
    assert run_cli("audit", out, "-q").returncode == 0
    # a worker killed mid-write leaves its temporary: a trial's audit called it a renamed output
    tmp = out / "images" / ".s1.png.tmp-30930-25b3b4752a18"
    tmp.write_bytes(original_output)
    r = run_cli("audit", out, "-q")
    assert r.returncode == 0 and ("1 temporary file of a write a kill interrupted, e.g. images/.s1.png.tmp-"
                                  "30930-25b3b4752a18 (not an output; the next `colorize run") in r.stdout, r.stdout
    report = json.loads((out / "audit.json").read_text())
    assert report["renamed_outputs"] == [] and report["temporaries"] == [f"images/{tmp.name}"]
    assert "removed 1 temporary file left by an interrupted run" in run_cli(*args).stdout and not tmp.exists()


def test_unwritable_outdir_is_found_before_the_run(tmp_path, monkeypatch, capsys):
    """Tests run as root, whom permissions do not stop: the check itself is made to fail."""
    from pipeline import cli, storage

    root = Path(__file__).resolve().parents[1]
    real_access = os.access

    def access(path, mode):
        if str(path).endswith("images"):
            return False
        return real_access(path, mode)

    (tmp_path / "out" / "images").mkdir(parents=True)
    monkeypatch.setattr(storage.os, "access", access)
    code = cli.main(["run", "--manifest", str(root / "manifests" / "demo.parquet"), "-o",
                     str(tmp_path / "out"), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and "images is not writable (Permission denied)" in err
    assert "chmod" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("err, said", [
    (errno.EROFS, "is on a read-only file system; choose an OUTDIR on a writable disk"),
    (errno.EACCES, "new/out cannot be made: {tmp} is not writable (Permission denied); fix its "
                   "permissions (e.g. chmod u+w {tmp})"),
])
def test_an_outdir_that_cannot_be_made_is_told_why(tmp_path, monkeypatch, capsys, err, said):
    """A trial's OUTDIR on a read-only mount was told to chmod -R a folder that was not there:
    the advice fits the cause (a mount, or the folder that would hold it)."""
    from pipeline import cli, storage

    root = Path(__file__).resolve().parents[1]

    def mkdir(self, *a, **kw):
        raise (PermissionError if err == errno.EACCES else OSError)(err, os.strerror(err), str(self))

    monkeypatch.setattr(storage.Path, "mkdir", mkdir)
    code = cli.main(["run", "--manifest", str(root / "manifests" / "demo.parquet"), "-o",
                     str(tmp_path / "new" / "out")])
    err_text = capsys.readouterr().err
    assert code == 2 and said.format(tmp=tmp_path) in err_text, err_text
    assert len(err_text.strip().splitlines()) == 1 and (err == errno.EACCES) == ("chmod" in err_text)


# --- a folder of odd files through every command ------------------------------------------------


def odd_archive(root: Path, photo) -> int:
    """A few hundred files of every kind an archive holds, odd ones included; returns the count."""
    rng = np.random.default_rng(7)
    g = Image.fromarray(photo)
    variants = []

    def add(name, make):
        variants.append((name, make))

    for mode in ("L", "1", "P", "RGB", "CMYK", "LA", "RGBA", "I;16", "I", "F"):
        add(f"mode-{mode.replace(';', '')}", lambda p, m=mode: (
            Image.fromarray(np.asarray(g).astype(np.uint16) * 257) if m == "I;16"
            else g.convert(m)).save(p.with_suffix(".tif" if m in ("I", "F", "CMYK") else ".png")
                                    if m != "CMYK" else p.with_suffix(".jpg")))
    add("trns", lambda p: g.convert("P").save(p.with_suffix(".png"), transparency=0))
    add("rgb48", lambda p: tifffile.imwrite(p.with_suffix(".tif"),
                                            np.dstack([np.asarray(g, np.uint16) * 257] * 3),
                                            photometric="rgb"))
    add("twelve-bit", lambda p: p.with_suffix(".jpg").write_bytes(
        (lambda d: d[: d.index(b"\xff\xc0") + 4] + b"\x0c" + d[d.index(b"\xff\xc0") + 5:])(
            jpeg_bytes(photo))))
    add("multipage", lambda p: g.save(p.with_suffix(".tif"), save_all=True, append_images=[g, g]))
    add("animated", lambda p: g.convert("P").save(p.with_suffix(".gif"), save_all=True,
                                                  append_images=[g.convert("P")] * 2))
    add("camera-exif", lambda p: p.with_suffix(".jpg").write_bytes(
        jpeg_bytes(photo, exif=camera_exif(), icc_profile=srgb_icc())))
    add("bad-exif", lambda p: p.with_suffix(".jpg").write_bytes(
        jpeg_bytes(photo, exif=exif_with_string_resolution())))
    add("huge-dpi", lambda p: p.with_suffix(".jpg").write_bytes(jpeg_bytes(photo, exif=huge_dpi_exif())))
    add("sepia", lambda p: Image.fromarray(toned(photo, (1.0, 0.85, 0.62))).save(p.with_suffix(".jpg")))
    add("stripes", lambda p: Image.fromarray(stripes()).save(p.with_suffix(".png")))
    add("truncated", lambda p: p.with_suffix(".jpg").write_bytes(jpeg_bytes(photo)[:900]))
    add("empty", lambda p: p.with_suffix(".png").write_bytes(b""))
    add("not-image", lambda p: p.with_suffix(".jpg").write_text("<html>404</html>"))
    add("bad-crc", lambda p: p.with_suffix(".png").write_bytes(
        (lambda d: d[:-5] + bytes([d[-5] ^ 1]) + d[-4:])(
            (lambda b: (g.save(b, "PNG"), b.getvalue())[1])(io.BytesIO()))))
    add("garbage-header", lambda p: p.with_suffix(".tif").write_bytes(
        b"II*\x00\x08\x00\x00\x00" + bytes(rng.integers(0, 255, 300).astype(np.uint8))))
    add("webp", lambda p: g.save(p.with_suffix(".webp")))
    add("bmp", lambda p: g.save(p.with_suffix(".bmp")))
    n = 0
    for k in range(10):  # ten copies of each, in ten folders
        d = root / f"box{k:02d}"
        d.mkdir(parents=True)
        for name, make in variants:
            make(d / name)
            n += 1
    return n


@pytest.mark.slow
def test_a_folder_of_odd_files_goes_through_every_command(tmp_path, photo, ckpt, warm):
    src = tmp_path / "archive"
    n = odd_archive(src, photo[::2, ::2].copy())
    assert n >= 250
    man = tmp_path / "m.parquet"
    r = run_cli("scan", src, "-o", man, "--shard-size", "40", "-q")
    assert r.returncode == 0, r.stderr
    assert pq.read_table(man).num_rows == n
    for fmt in ("png", "tiff"):
        out = tmp_path / fmt
        r = run_cli("run", "--manifest", man, "-o", out, "--format", fmt, "-q", "--size", "32",
                    "--checkpoint", ckpt)
        assert r.returncode == 0, r.stderr
        rows = Outdir(out).read_results().to_pylist()
        assert len(rows) == n and len({r["image_id"] for r in rows}) == n
        for row in rows:
            if row["status"] == "error":
                assert row["error"] and len(row["error"]) > 8, row
        by = {}
        for row in rows:
            by.setdefault(Path(row["source_path"]).stem, set()).add(row["status"])
        assert by["stripes"] == {"skipped"} and by["sepia"] == {"ok"}
        assert by["twelve-bit"] == {"error"} and by["empty"] == {"error"}
        assert by["camera-exif"] == {"ok"} and by["bad-exif"] == {"ok"} and by["rgb48"] == {"ok"}
        assert by["trns"] == {"ok"} and by["mode-RGBA"] == {"ok"} and by["bad-crc"] == {"ok"}
        rgb48 = next(r for r in rows if Path(r["source_path"]).stem == "rgb48")
        assert rgb48["bits"] == 16
        r = run_cli("audit", out, "-q")
        assert r.returncode == 0, r.stdout + r.stderr
        # a proof of what happened to every file says whose other pages were not colorized
        left = json.loads((out / "audit.json").read_text())["pages_left"]
        assert sorted({Path(x["source_path"]).stem for x in left}) == ["multipage"]
        assert len(left) == 10 and {x["note"] for x in left} == {"first of 3 pages (the other 2 not colorized)"}
        assert "10 files of several pages: only the first page of each colorized, e.g." in r.stdout
        assert "<h2>Pages not colorized (10)</h2>" in (out / "audit.html").read_text(encoding="utf-8")
    twelve = next(r for r in Outdir(tmp_path / "png").read_results().to_pylist()
                  if Path(r["source_path"]).stem == "twelve-bit")
    assert "12-bit JPEG" in twelve["error"]


@pytest.mark.parametrize("fmt", ["png", "jpeg", "tiff", "webp"])
def test_the_archives_own_xmp_is_carried_with_ours_added(tmp_path, photo, fmt):
    """A library's scan holds its rights, creator, keywords and caption in XMP (and IPTC-IIM):
    the output keeps them beside our record; what its pixels contradict (orientation, gray)
    goes; what cannot be carried (the IIM block, a PNG's texts in another format) is noted."""
    import json
    import shutil

    from pipeline.worker.writers import encode_output, provenance

    if shutil.which("exiftool") is None:
        pytest.skip("exiftool is not installed (.ci/run installs it)")
    src = tmp_path / "scan.png"
    Image.fromarray(photo).save(src)
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-dc:Rights=© Nationalbibliothek",
                    "-XMP-dc:Creator=Zofia Łęcka", "-XMP-dc:Subject=Łódź", "-XMP-dc:Subject=Café",
                    "-XMP-dc:Description=Marktplatz, 1923", "-XMP-dc:Identifier=NB-000123",
                    "-XMP-tiff:Orientation=6", "-XMP-photoshop:ColorMode=Grayscale",
                    "-IPTC:Keywords=Café", "-PNG:Title=Omas Hochzeit", "-PNG:Comment=Scan by NB lab",
                    "-EXIF:Software=Adobe Photoshop 22.4", "-EXIF:Artist=Zofia Łęcka",
                    "-XMP-photoshop:DocumentAncestors=xmp.did:0001", "-XMP-xmp:CreateDate=2015:03:04 12:00:00",
                    "-EXIF:ColorSpace=Uncalibrated", src], check=True)
    d = decode(src)
    prov = provenance("c" * 64, "2026-12-02", "s" * 64, {"identifier": "INV-7", "source": "scan.png"})
    data, notes = encode_output(np.dstack([d.gray] * 3), fmt, d, 90, prov)
    out = tmp_path / f"out.{fmt}"
    out.write_bytes(data)
    got = json.loads(subprocess.run(["exiftool", "-j", "-G1", "-XMP:all", "-PNG:Title", "-EXIF:ColorSpace", out],
                                    capture_output=True, text=True, check=True).stdout)[0]
    # the line in words stays beside the archive's caption; the scan's file dates are not ours
    assert got["XMP-colorize:Statement"].startswith("Machine-colorized by archive-colorizer")
    assert "XMP-xmp:CreateDate" not in got
    assert got.get("ExifIFD:ColorSpace", "sRGB") == "sRGB"  # a TIFF has no Exif sub-IFD at all
    assert got["XMP-dc:Rights"] == "© Nationalbibliothek" and got["XMP-dc:Creator"] == "Zofia Łęcka"
    assert got["XMP-dc:Subject"] == ["Łódź", "Café"]
    assert got["XMP-dc:Description"] == "Marktplatz, 1923"  # the archive's caption, not our line
    assert got["XMP-dc:Identifier"] == "INV-7"  # the catalogue is the record
    assert got["XMP-iptcExt:DigitalSourceType"].endswith("compositeWithTrainedAlgorithmicMedia")
    assert got["XMP-colorize:SourceSHA256"] == "s" * 64
    assert "XMP-tiff:Orientation" not in got and "XMP-photoshop:ColorMode" not in got
    assert "XMP-photoshop:DocumentAncestors" not in got  # what placed files it held: not ours
    if fmt != "tiff":  # the EXIF's Software says what made this file (TIFF: its own tag, test above)
        assert Image.open(io.BytesIO(data)).getexif()[305].startswith("archive-colorizer")
    # the block's keywords are the XMP's too: the XMP's (an XMP-aware tool wrote them later)
    assert "IPTC-IIM block not carried; the source's XMP's own keywords kept over the block's" in d.notes
    if fmt == "png":
        assert got["PNG:Title"] == "Omas Hochzeit"
        comment = Image.open(io.BytesIO(data)).text["Comment"]  # one, the source's then ours
        assert comment.startswith("Scan by NB lab\n\nMachine-colorized by archive-colorizer")
        assert data.count(b"Comment\x00") == 1
    else:
        assert (f"PNG text Title in the XMP only (dc:title); Comment not carried (a {fmt} has no "
                "place for it)") in notes
    assert got["XMP-dc:Title"] == "Omas Hochzeit"  # the PNG's Title, in every format's XMP


def _exiftool_iim(path, *tags):
    if shutil.which("exiftool") is None:
        pytest.skip("exiftool is not installed (.ci/run installs it)")
    subprocess.run(["exiftool", "-q", "-q", "-overwrite_original", *tags, path], check=True)


@pytest.mark.parametrize("ext", ["jpg", "tif", "png"])
def test_a_scans_iptc_iim_record_reaches_every_outputs_xmp(tmp_path, photo, ext):
    """An older workflow (FotoStation, Photoshop before CS) catalogued the scan in IPTC-IIM
    alone: its caption, by-line, copyright, keywords and date reach each output's XMP, where
    every format keeps them; our record is added, and the catalogue's title wins."""
    from pipeline.worker.writers import encode_output, provenance

    src = tmp_path / f"scan.{ext}"
    Image.fromarray(photo).save(src)
    _exiftool_iim(src, "-IPTC:CodedCharacterSet=UTF8", "-IPTC:Caption-Abstract=Straßenbahn am Markt\rLinie 3",
                  "-IPTC:By-line=Zofia Łęcka", "-IPTC:By-line=J. Novák", "-IPTC:CopyrightNotice=© Stadtarchiv",
                  "-IPTC:Keywords=Tram", "-IPTC:Keywords=Łódź", "-IPTC:ObjectName=Markt",
                  "-IPTC:DateCreated=1931:05:02", "-IPTC:TimeCreated=14:30:00+01:00",
                  "-IPTC:Credit=Sammlung Weber", "-IPTC:City=Łódź", "-IPTC:Urgency=5")
    before = src.read_bytes()
    d = decode(src)
    assert src.read_bytes() == before
    assert ("IPTC-IIM block carried in the XMP (object name, keywords, by-line, city, credit, "
            "copyright notice, caption, date created); its datasets 2:10 not carried") in d.notes
    prov = provenance("c" * 64, "2026-12-05", "s" * 64, {"identifier": "INV-7", "title": "Marktplatz"})
    for fmt in ("png", "jpeg", "tiff", "webp"):
        data, _ = encode_output(np.dstack([d.gray] * 3), fmt, d, 90, prov)
        out = tmp_path / f"out.{fmt}"
        out.write_bytes(data)
        got = json.loads(subprocess.run(["exiftool", "-j", "-G1", "-XMP:all", out], capture_output=True,
                                        text=True, check=True).stdout)[0]
        assert got["XMP-dc:Description"] == "Straßenbahn am Markt\nLinie 3", fmt
        assert got["XMP-dc:Creator"] == ["Zofia Łęcka", "J. Novák"]
        assert got["XMP-dc:Rights"] == "© Stadtarchiv" and got["XMP-dc:Subject"] == ["Tram", "Łódź"]
        assert got["XMP-photoshop:DateCreated"] == "1931:05:02 14:30:00+01:00"  # MWG: 2:55 with 2:60
        assert got["XMP-photoshop:Credit"] == "Sammlung Weber"
        assert got["XMP-photoshop:City"] == "Łódź"
        assert got["XMP-dc:Title"] == "Marktplatz" and got["XMP-dc:Identifier"] == "INV-7"  # the catalogue's
        assert got["XMP-colorize:SourceSHA256"] == "s" * 64


@pytest.mark.parametrize("ext", ["jpg", "tif"])
def test_where_iim_and_xmp_differ_the_newer_wins_as_the_files_digest_says(tmp_path, photo, ext):
    """Both say the rights: the XMP's, unless the IIM was edited after the XMP was written (an
    IIM-only tool: the MD5 of the block Photoshop keeps no longer matches), then the block's."""
    src = tmp_path / f"scan.{ext}"
    Image.fromarray(photo).save(src)
    _exiftool_iim(src, "-IPTC:CopyrightNotice=IIM rights", "-IPTC:City=Brno", "-XMP-dc:Rights=XMP rights",
                  "-IPTCDigest=new")
    d = decode(src)
    assert b"XMP rights" in d.xmp and b"IIM rights" not in d.xmp and b"Brno" in d.xmp
    assert not any("edited after" in n for n in d.notes)
    _exiftool_iim(src, "-IPTCDigest=00112233445566778899aabbccddeeff")  # the block is not what it was
    d = decode(src)
    assert b"IIM rights" in d.xmp and b"XMP rights" not in d.xmp and b"Brno" in d.xmp
    assert ("IPTC-IIM block carried in the XMP (city, copyright notice); the block was edited after the "
            "source's XMP (the digest in the file says), so its values are kept over the XMP's") in d.notes


def test_an_iim_block_without_a_charset_reads_as_its_tools_wrote_it_and_damage_keeps_what_came_before():
    """No CodedCharacterSet: UTF-8 where the bytes are, else Windows-1252 (what those tools
    wrote); a partial date stays partial; a block cut short keeps the datasets before the cut."""
    from pipeline.worker import iim

    def ds(n, value: bytes) -> bytes:
        return b"\x1c\x02" + bytes([n]) + len(value).to_bytes(2, "big") + value

    block = (ds(0, b"\x00\x04") + ds(120, "Café Müller".encode("cp1252")) + ds(80, "Łęcka".encode())
             + ds(55, b"19310000") + ds(116, b"(c) Archiv\x07") + ds(25, b"A") + ds(25, b"B"))
    props, left = iim.read(block + b"\x1c\x02\x78\x00\x40cut")
    assert props == {"dc:description": ["Café Müller"], "dc:creator": ["Łęcka"],
                     "photoshop:DateCreated": ["1931"], "dc:rights": ["(c) Archiv"], "dc:subject": ["A", "B"]}
    assert left == []
    assert iim.read(ds(62, b"19980304") + ds(63, b"100000"))[1] == ["2:62", "2:63"]  # the scan's date: named
    big = b"x" * 70000  # longer than two bytes say: an extended dataset's length
    props, _ = iim.read(b"\x1c\x02\x78\x80\x04" + len(big).to_bytes(4, "big") + big + ds(105, b"Head"))
    assert props == {"dc:description": [("x" * 70000)], "photoshop:Headline": ["Head"]}
    assert iim.read(b"not iim")[0] == {}
    for date, time, said, left in [  # 00: not known; a day without its month says no more
            (b"19310200", b"", ["1931-02"], []), (b"19310002", b"", ["1931"], []),
            (b"19310502", b"143000+0100", ["1931-05-02T14:30:00+01:00"], []),
            (b"19310502", b"1430", ["1931-05-02"], ["2:60"]), (b"19310200", b"143000", ["1931-02"], ["2:60"]),
            (b"1931-05-02", b"", None, ["2:55"]), (b"", b"143000", None, ["2:60"]),
            (b"19310231", b"", None, ["2:55"]), (b"19310502", b"143000+9999", ["1931-05-02"], ["2:60"])]:
        props, out = iim.read((ds(55, date) if date else b"") + (ds(60, time) if time else b""))
        assert (props.get("photoshop:DateCreated"), out) == (said, left), (date, time)
    from pipeline.worker.imaging import Decoded, _with_iim

    d = Decoded(gray=None, mode="L", format="JPEG", kind="gray")
    _with_iim(d, ds(0, b"\x00\x04"), False)  # its version alone: no record, nothing lost
    assert d.notes == [] and d.xmp is None
    from PIL import PngImagePlugin

    from pipeline.worker.imaging import decode

    info = PngImagePlugin.PngInfo()  # a caption that would take the XMP past its limit: noted
    info.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/'
                  '1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"'
                  f'><dc:source>{"s" * ((8 << 20) - 600000)}</dc:source></rdf:Description></rdf:RDF></x:xmpmeta>')
    caption = b"c" * 700000
    block = b"\x1c\x02\x78\x80\x04" + len(caption).to_bytes(4, "big") + caption
    info.add_text("Raw profile type iptc", f"\nIPTC profile\n{len(block):8d}\n{block.hex()}\n")
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "PNG", pnginfo=info)
    d = decode(io.BytesIO(buf.getvalue()))
    assert len(d.xmp) < 8 << 20 and b"ccc" not in d.xmp
    assert ("IPTC-IIM block not carried in the XMP (the XMP would be 8.1 MB, more than the 8 MB an XMP may "
            "have here)") in d.notes, d.notes


def test_a_pngs_own_title_author_and_copyright_are_its_xmps_where_the_xmp_is_silent(photo):
    """PNG's keywords for a record reach the XMP (which every format keeps); the XMP's own
    value wins where both say a thing; a control byte (no XML holds one) is left out."""
    from PIL import PngImagePlugin

    from pipeline.worker.imaging import parse_xmp

    info = PngImagePlugin.PngInfo()
    info.add_text("Title", "Omas\x07 Hoch\ufffezeit")
    info.add_itxt("Author", "Zofia Łęcka")
    info.add_text("Copyright", "PNG rights")
    info.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf='
                  '"http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:dc='
                  '"http://purl.org/dc/elements/1.1/"><dc:rights><rdf:Alt><rdf:li xml:lang="x-default">XMP '
                  'rights</rdf:li></rdf:Alt></dc:rights></rdf:Description></rdf:RDF></x:xmpmeta>')
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "PNG", pnginfo=info)
    d = decode(io.BytesIO(buf.getvalue()))
    said = {el.tag.split("}")[1]: "".join(el.itertext()) for el in parse_xmp(d.xmp).iter()
            if el.tag.startswith("{http://purl.org/dc/")}
    assert said == {"title": "Omas Hochzeit", "creator": "Zofia Łęcka", "rights": "XMP rights"}
    assert d.texts["Title"] == "Omas\x07 Hoch\ufffezeit"  # a PNG output keeps the text as it was
    from pipeline.worker.writers import encode_output, provenance

    _, notes = encode_output(np.dstack([d.gray] * 3), "jpeg", d, 90, provenance("c" * 64, "2026-12-05", None))
    assert ("PNG text Author, Title in the XMP only (dc:creator, dc:title); Copyright not carried "
            "(the source's XMP's own dc:rights kept over it)") in notes
    info = PngImagePlugin.PngInfo()  # an XMP too large for a JPEG's segment: none of it is there
    info.add_text("Description", "d" * 80000)
    info.add_text("Copyright", "Stadtarchiv")
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "PNG", pnginfo=info)
    d = decode(io.BytesIO(buf.getvalue()))
    data, notes = encode_output(np.dstack([d.gray] * 3), "jpeg", d, 90, provenance("c" * 64, "2026-12-05", None))
    assert b"Stadtarchiv" in data and b"d" * 1000 not in data  # the caption goes, the rights stay
    assert ("PNG text Copyright in the XMP only (dc:rights); Description not carried (the source's XMP "
            "that held it was not carried)") in notes, notes
    assert any(n.startswith("source XMP in part (") and n.endswith("not carried: dc:description") for n in notes)
    info = PngImagePlugin.PngInfo()  # texts Pillow reads (64 MB in all) make no XMP over its limit
    for k in ("Title", "Author", "Description"):
        info.add_text(k, k[0] * (3 << 20))
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "PNG", pnginfo=info)
    d = decode(io.BytesIO(buf.getvalue()))
    assert len(d.xmp) < 8 << 20 and len(d.texts["Description"]) == 3 << 20  # a PNG output keeps the texts
    _, notes = encode_output(np.dstack([d.gray] * 3), "tiff", d, 90, provenance("c" * 64, "2026-12-05", None))
    # together too large: the creator, then the title, each as it fits (the rights would go first)
    assert notes[-1] == ("PNG text Author, Title in the XMP only (dc:creator, dc:title); Description not "
                         "carried (the XMP would be 9.0 MB, more than the 8 MB an XMP may have here)")


def test_a_png_texts_language_stays_with_it(photo):
    """An iTXt in German, its keyword translated: a PNG output's text keeps both (a trial's came
    back with no language)."""
    from PIL import PngImagePlugin

    from pipeline.worker.writers import encode_output, provenance

    info = PngImagePlugin.PngInfo()
    info.add_itxt("Copyright", "© Stadtarchiv Görlitz", lang="de", tkey="Urheberrecht")
    info.add_text("Title", "Markt")
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "PNG", pnginfo=info)
    d = decode(io.BytesIO(buf.getvalue()))
    data, _ = encode_output(np.dstack([d.gray] * 3), "png", d, 90, provenance("c" * 64, "2026-12-05", None))
    got = Image.open(io.BytesIO(data)).text
    assert (got["Copyright"], got["Copyright"].lang, got["Copyright"].tkey) == (
        "© Stadtarchiv Görlitz", "de", "Urheberrecht")
    assert got["Title"] == "Markt" and not getattr(got["Title"], "lang", "")


def test_a_source_xmp_that_does_not_parse_is_noted_and_ours_written(tmp_path, photo):
    from pipeline.worker.writers import encode_output, provenance

    d = decode(io.BytesIO(_png_with_xmp(photo, b"<x:xmpmeta><rdf:RDF>broken")))
    assert d.xmp is None and any(n.startswith("source XMP not carried (unreadable") for n in d.notes)
    evil = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x:xmpmeta xmlns:x="adobe:ns:meta/">'
            b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/></x:xmpmeta>')
    d = decode(io.BytesIO(_png_with_xmp(photo, evil)))
    assert d.xmp is None and "source XMP not carried (unreadable: it declares a DOCTYPE)" in d.notes
    data, _ = encode_output(np.dstack([d.gray] * 3), "png", d, 90, provenance("c" * 64, "2026", None))
    assert b"compositeWithTrainedAlgorithmicMedia" in data


def _png_with_xmp(photo, xmp: bytes) -> bytes:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp.decode())
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def test_a_tiff_output_keeps_the_pictures_date_in_its_xmp():
    from pipeline.worker.writers import provenance

    ex = Image.Exif()
    ex[0x8769] = {36867: "1961:07:14 09:30:00"}
    data = encode(np.zeros((8, 8, 3), np.uint8), "tiff", exif=ex.tobytes(), notes=[],
                  provenance=provenance("c" * 64, "2026-12-02", None))
    with tifffile.TiffFile(io.BytesIO(data)) as t:
        xmp = bytes(t.pages[0].tags["XMP"].value)
    assert b'exif:DateTimeOriginal="1961-07-14T09:30:00"' in xmp


def test_every_file_of_a_shoebox_is_a_row_or_named_as_left_out(tmp_path, ckpt, warm):
    """A family's folder as it is: an iPhone's HEIC, a PDF named like a photo, a camera RAW, a
    note and an XMP sidecar, a NAS's thumbnail folder and a hidden one, the OS's own files. The
    pictures no reader here opens are rows with the reason and what to do; the rest is counted
    and named, never silently gone; the NAS's and the OS's own files are not the archive's."""
    p = tmp_path / "photos"
    for d in ("album", ".thumbnails", "@eaDir/a.jpg"):
        (p / d).mkdir(parents=True)
    for rel in ("album/a.jpg", ".thumbnails/t.jpg", "@eaDir/a.jpg/SYNOPHOTO_THUMB_S.jpg"):
        Image.new("L", (24, 16), 90).save(p / rel)
    (p / "copy").mkdir()
    (p / "copy" / "a again.jpg").write_bytes((p / "album" / "a.jpg").read_bytes())  # filed twice
    (p / "album" / "IMG_2043.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 40)
    (p / "album" / "Uncle Joe 1962.jpg").write_bytes(b"%PDF-1.4\n%...")
    (p / "album" / "DSC_0001.NEF").write_bytes(b"II*\x00" + b"\x00" * 60)  # TIFF-shaped, as RAWs are
    (p / "album" / "note.txt").write_text("Oma, 1950")
    (p / "album" / "a.xmp").write_text("<x:xmpmeta/>")  # a.jpg's sidecar: read with it
    (p / "album" / "lost.xmp").write_text("<x:xmpmeta/>")  # no picture of its name: left out
    for junk in ("Thumbs.db", ".DS_Store", "desktop.ini"):
        (p / "album" / junk).write_bytes(b"x")
    from pipeline.worker.writers import provenance

    rgb = np.full((16, 24, 3), 120, np.uint8)  # a quick look saved among the scans
    (p / "album" / "a colour.png").write_bytes(
        encode(rgb, "png", provenance=provenance("c" * 64, "2026-12-02", None)))
    Image.new("L", (24, 16), 90).save(os.fsdecode(bytes(p / "album") + b"/Oma \xe9t\xe9 1950.jpg"))
    os.mkfifo(p / "album" / "pipe.jpg")  # opened, it would hang the scan
    (p / "album" / "list.csv").write_text("path\na.jpg\n")  # a catalogue beside its scans
    r = run_cli("scan", p, p / "album" / "list.csv", "-o", tmp_path / "m.parquet", "--report",
                tmp_path / "report.csv")
    assert r.returncode == 0, r.stderr
    assert "1 file left out: not pictures (1 .txt; --report lists them): note.txt" \
           in r.stderr  # the catalogue read is not among them, nor a.jpg's sidecar
    assert "1 XMP sidecar with no picture of its name (a picture renamed without it?" in r.stderr
    assert "1 XMP sidecar beside its picture: read with it" in r.stderr
    assert (f"2 files left out: {p / 'album'}/Oma \\xe9t\\xe9 1950.jpg: its name (or a folder's above "
            "it) is not UTF-8 text: "
            f"rename it (e.g. convmv -f latin1 -t utf8); {p / 'album'}/pipe.jpg: not a regular file") in r.stderr
    assert f"left out 1 file that colorize wrote (machine-colorized, their metadata says; not " \
           f"originals): {p / 'album' / 'a colour.png'}" in r.stderr
    t = pq.read_table(tmp_path / "m.parquet").to_pylist()
    assert sorted(Path(x["path"]).name for x in t) == ["DSC_0001.NEF", "IMG_2043.HEIC", "Uncle Joe 1962.jpg",
                                                       "a again.jpg", "a.jpg"]
    report = (tmp_path / "report.csv").read_text(encoding="utf-8-sig")
    assert "not_a_picture" in report and "note.txt" in report and "colorize_output" in report
    out = tmp_path / "out"
    (out).mkdir()
    (out / ".DS_Store").write_bytes(b"x")  # a folder made in the Finder: empty to its user
    r = run_cli("run", "--manifest", tmp_path / "m.parquet", "-o", out, "--checkpoint", ckpt,
                "--size", "32", "-q", "--workers", "1")
    assert r.returncode == 0, r.stderr
    rows = {Path(x["source_path"]).name: (x["status"], x["error"])
            for x in pq.read_table(out / "results").to_pylist()}
    assert rows["a.jpg"] == ("ok", None)
    assert rows["IMG_2043.HEIC"] == ("error", "an HEIC photo (iPhones' format): convert it to JPEG "
                                              "or TIFF (e.g. heif-convert) first")
    assert rows["Uncle Joe 1962.jpg"] == ("error", "a PDF document, not an image: export its pages "
                                                   "as TIFF first")
    assert rows["DSC_0001.NEF"] == ("error", "a camera RAW file: develop it to TIFF first")
    r = run_cli("audit", out, "-q")  # the copy filed twice: each colorized, and said
    assert r.returncode == 0 and (f"2 images are copies of another (the same bytes, 1 group, e.g. "
                                  f"{p / 'album' / 'a.jpg'} = {p / 'copy' / 'a again.jpg'})") in r.stdout, r.stdout


def _xmp(body: str, ns: str = "") -> str:
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
            f'22-rdf-syntax-ns#"><rdf:Description rdf:about="" {ns}>{body}</rdf:Description>'
            '</rdf:RDF></x:xmpmeta>')


def test_a_hostile_or_huge_source_xmp_costs_its_xmp_not_the_picture(photo):
    """A DOCTYPE hidden in UTF-16 is refused as in UTF-8 (entities are never expanded); an XMP
    too large for a JPEG's one segment (a long Photoshop history) leaves the JPEG with ours and
    a note; a Camera Raw recipe (grayscale, crop) is not carried to the colour."""
    from pipeline.worker.writers import encode_output, provenance

    bomb = ('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
            '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>' + _xmp("<dc:title>&b;</dc:title>",
            'xmlns:dc="http://purl.org/dc/elements/1.1/"'))
    d = decode(io.BytesIO(_png_with_xmp_bytes(photo, bomb.encode("utf-16"))))
    assert d.xmp is None and "source XMP not carried (unreadable: it declares a DOCTYPE)" in d.notes
    history = "".join(f"<rdf:li>step {i:05d} {'x' * 60}</rdf:li>" for i in range(1200))
    big = _xmp(f"<dc:subject><rdf:Bag>{history}</rdf:Bag></dc:subject><crs:ConvertToGrayscale>True"
               "</crs:ConvertToGrayscale>", 'xmlns:dc="http://purl.org/dc/elements/1.1/" '
               'xmlns:crs="http://ns.adobe.com/camera-raw-settings/1.0/"')
    d = decode(io.BytesIO(_png_with_xmp_bytes(photo, big.encode())))
    assert d.xmp is not None and len(d.xmp) > 70_000
    prov = provenance("c" * 64, "2026-12-02", None)
    jpeg, notes = encode_output(np.dstack([d.gray] * 3), "jpeg", d, 90, prov)
    assert any(n.startswith("source XMP not carried (") and "JPEG's XMP segment" in n for n in notes)
    assert b"compositeWithTrainedAlgorithmicMedia" in jpeg and b"step 00001" not in jpeg
    tiff, notes = encode_output(np.dstack([d.gray] * 3), "tiff", d, 90, prov)
    assert b"step 01199" in tiff and b"ConvertToGrayscale" not in tiff
    # a bulky property of no record goes first, and the archive's rights stay (all went)
    pantry = "".join(f"<rdf:li>placed file {i:05d} {'p' * 60}</rdf:li>" for i in range(1200))
    big = _xmp(f"<dc:rights><rdf:Alt><rdf:li xml:lang='x-default'>© Stadtarchiv</rdf:li></rdf:Alt></dc:rights>"
               f"<ps:Layers><rdf:Seq>{pantry}</rdf:Seq></ps:Layers>",
               'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:ps="http://example.org/layers/"')
    d = decode(io.BytesIO(_png_with_xmp_bytes(photo, big.encode())))
    jpeg, notes = encode_output(np.dstack([d.gray] * 3), "jpeg", d, 90, prov)
    assert "© Stadtarchiv".encode() in jpeg and b"placed file" not in jpeg
    assert any(n.startswith("source XMP in part (") and n.endswith(": not carried: ps:Layers") for n in notes), notes


def test_the_merged_xmp_keeps_the_sources_prefixes_whatever_came_before(photo):
    """The same image gives the same bytes whichever images a worker merged before it (a
    process-wide namespace registry made a prefix depend on them): repairs stay byte-identical."""
    from pipeline.worker.writers import encode_output, provenance

    lr = _xmp("<lr:hierarchicalSubject><rdf:Bag><rdf:li>Orte|Köln</rdf:li></rdf:Bag>"
              "</lr:hierarchicalSubject>", 'xmlns:lr="http://ns.adobe.com/lightroom/1.0/"')
    other = _xmp("<ns1:hierarchicalSubject>x</ns1:hierarchicalSubject>",
                 'xmlns:ns1="http://ns.adobe.com/lightroom/1.0/"')
    prov = provenance("c" * 64, "2026-12-02", None)

    def out(xmp):
        d = decode(io.BytesIO(_png_with_xmp_bytes(photo, xmp.encode())))
        return encode_output(np.dstack([d.gray] * 3), "png", d, 90, prov)[0]

    first = out(lr)
    out(other)
    assert out(lr) == first and b"<lr:hierarchicalSubject>" in first


def _png_with_xmp_bytes(photo, xmp: bytes) -> bytes:
    """A PNG whose iTXt XMP holds these bytes as they are (UTF-16 too), as a broken or hostile
    writer leaves them."""
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "PNG")
    png = buf.getvalue()
    import zlib

    data = b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp
    chunk = struct.pack(">I", len(data)) + b"iTXt" + data + struct.pack(">I", zlib.crc32(b"iTXt" + data))
    return png[:33] + chunk + png[33:]


def test_a_file_where_an_output_folder_must_be_is_named(tmp_path):
    """A file called like the folder an output goes in: every rerun would fail the same way, so
    the message names it, not 'File exists'."""
    import errno

    from pipeline.storage import Store

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "box").write_text("x")
    err = stages._write_error(Store(str(tmp_path)), "images/box/a.png",
                              OSError(errno.EEXIST, "File exists"))
    assert str(err) == (f"cannot write {tmp_path}/images/box/a.png: {tmp_path}/images/box is a file "
                        "where a folder is needed; move it out of the way, then resume")


def test_a_pantrys_nested_descriptions_are_the_placed_files_not_the_scans():
    """Photoshop's xmpMM:Pantry holds whole rdf:Descriptions of the files placed in it: they are
    carried as they are, and the scan's own caption, or our line where it has none, stays."""
    from lxml import etree

    from pipeline.worker.writers import merged, provenance, xmp_packet

    src = _xmp('<xmpMM:Pantry><rdf:Bag><rdf:li><rdf:Description xmpMM:InstanceID="xmp.iid:7" '
               'xmp:CreatorTool="Photoshop"><dc:description>placed</dc:description>'
               '</rdf:Description></rdf:li></rdf:Bag></xmpMM:Pantry>',
               'xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/" xmlns:xmp="http://ns.adobe.com/xap/'
               '1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/"').encode()
    out = merged(xmp_packet(provenance("c" * 64, "2026-12-02", None)), src)
    root = etree.fromstring(out.split(b"?>", 1)[1].rsplit(b"<?xpacket", 1)[0])
    rdf = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
    nested = root.find(f".//{{http://ns.adobe.com/xap/1.0/mm/}}Pantry//{rdf}Description")
    assert nested.get("{http://ns.adobe.com/xap/1.0/mm/}InstanceID") == "xmp.iid:7"
    assert nested.find("{http://purl.org/dc/elements/1.1/}description").text == "placed"
    top = root.find(rdf + "RDF").findall(rdf + "Description")
    said = [d.find("{http://purl.org/dc/elements/1.1/}description") for d in top]
    assert any(x is not None and b"Machine-colorized" in etree.tostring(x) for x in said)


def test_a_jpeg_2000_masters_xmp_is_carried(tmp_path, photo):
    """A library's JP2 master keeps its rights in a uuid box that Pillow does not read."""
    import shutil

    if shutil.which("exiftool") is None:
        pytest.skip("exiftool is not installed (.ci/run installs it)")
    Image.fromarray(photo).save(tmp_path / "m.jp2")
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-dc:Rights=© NB, CC BY 4.0",
                    tmp_path / "m.jp2"], check=True)
    d = decode(tmp_path / "m.jp2")
    assert d.xmp is not None and "© NB, CC BY 4.0".encode() in d.xmp


def _sidecar(props: str, extra_ns: str = "") -> bytes:
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
            '22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements'
            f'/1.1/" {extra_ns}>{props}</rdf:Description></rdf:RDF></x:xmpmeta>').encode()


def test_xmp_sidecars_are_read_with_their_pictures(tmp_path, photo, ckpt, warm):
    """A Lightroom (NAME.xmp) or darktable (NAME.EXT.xmp) workflow keeps the rights, captions and
    keywords in a sidecar: the scan pairs it with its picture (not a file left out), and the
    output's XMP holds it, over the file's own where both say a thing; an edit history that
    would make the colour gray again is not carried."""
    import json
    import shutil

    if shutil.which("exiftool") is None:
        pytest.skip("exiftool is not installed (.ci/run installs it)")
    scans = tmp_path / "scans"
    scans.mkdir()
    Image.fromarray(photo).save(scans / "lr.tif")
    (scans / "lr.xmp").write_bytes(_sidecar(
        '<dc:rights><rdf:Alt><rdf:li xml:lang="x-default">© Biblioteka Narodowa</rdf:li></rdf:Alt>'
        '</dc:rights><dc:creator><rdf:Seq><rdf:li>Zofia Łęcka</rdf:li></rdf:Seq></dc:creator>'
        '<crs:ConvertToGrayscale>True</crs:ConvertToGrayscale>',
        'xmlns:crs="http://ns.adobe.com/camera-raw-settings/1.0/"'))
    Image.fromarray(photo).save(scans / "dt.jpg")
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-dc:Title=old title",
                    "-XMP-dc:Subject=Görlitz", scans / "dt.jpg"], check=True)
    (scans / "dt.jpg.xmp").write_bytes(_sidecar(
        '<dc:title><rdf:Alt><rdf:li xml:lang="x-default">Straßenbahn, 1923</rdf:li></rdf:Alt>'
        '</dc:title><darktable:history><rdf:Seq><rdf:li darktable:operation="monochrome"/>'
        '</rdf:Seq></darktable:history>', 'xmlns:darktable="http://darktable.sf.net/"'))
    (scans / "notes.txt").write_text("box 4")
    man = tmp_path / "m.parquet"
    r = run_cli("scan", scans, "-o", man, "--relative")
    assert r.returncode == 0, r.stderr
    assert "2 XMP sidecars beside their pictures: read with them" in r.stdout + r.stderr
    assert "1 file left out: not pictures (1 .txt" in r.stdout + r.stderr
    sides = dict(zip(*[pq.read_table(man).column(c).to_pylist() for c in ("rel_path", "xmp_sidecar")],
                     strict=True))
    assert sides == {"dt.jpg": "scans/dt.jpg.xmp", "lr.tif": "scans/lr.xmp"}  # as paths are kept
    out = tmp_path / "out"
    r = run_cli("run", "--manifest", man, "-o", out, "--checkpoint", ckpt, "--format", "tiff")
    assert r.returncode == 0, r.stderr
    got = {Path(g["SourceFile"]).stem: g for g in json.loads(subprocess.run(
        ["exiftool", "-j", "-G1", "-XMP:all", "-r", out / "images"],
        capture_output=True, text=True, check=True).stdout)}
    assert got["lr"]["XMP-dc:Rights"] == "© Biblioteka Narodowa"
    assert got["lr"]["XMP-dc:Creator"] == "Zofia Łęcka"
    assert not any(k.startswith("XMP-crs") for k in got["lr"])
    assert got["dt"]["XMP-dc:Title"] == "Straßenbahn, 1923"  # the sidecar's, over the file's own
    assert got["dt"]["XMP-dc:Subject"] == "Görlitz"  # what only the file says stays
    assert not any("darktable" in k for k in got["dt"])
    notes = {Path(r["source_path"]).stem: r["notes"] for r in Outdir(out).read_results().to_pylist()}
    assert "XMP sidecar lr.xmp read" in notes["lr"] and "XMP sidecar dt.jpg.xmp read" in notes["dt"]
    one = tmp_path / "one.jpg"  # a quick look at one file reads it too
    r = run_cli("image", scans / "lr.tif", one, "--checkpoint", ckpt, "--size", "32")
    assert r.returncode == 0 and "XMP sidecar lr.xmp read" in r.stdout + r.stderr, r.stderr
    got = json.loads(subprocess.run(["exiftool", "-j", "-XMP-dc:Rights", one], capture_output=True,
                                    text=True, check=True).stdout)[0]
    assert got["Rights"] == "© Biblioteka Narodowa"
    # the sidecar read is on record: one edited since (a licence withdrawn) or removed is told
    read = {Path(r["source_path"]).stem: r["sidecar_sha256"] for r in Outdir(out).read_results().to_pylist()}
    assert read == {"lr": hashlib.sha256((scans / "lr.xmp").read_bytes()).hexdigest(),
                    "dt": hashlib.sha256((scans / "dt.jpg.xmp").read_bytes()).hexdigest()}
    (scans / "lr.xmp").write_bytes(_sidecar(
        '<dc:rights><rdf:Alt><rdf:li xml:lang="x-default">withdrawn: do not publish</rdf:li></rdf:Alt></dc:rights>'))
    (scans / "dt.jpg.xmp").unlink()
    os.mkfifo(scans / "dt.jpg.xmp")  # now a pipe: read_source refuses it (the audit crashed on it)
    r = run_cli("audit", out)
    assert r.returncode == 0 and "XMP sidecar" not in r.stdout  # the inputs are not read unless asked
    r = run_cli("audit", out, "--check-inputs")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 outputs carry the record of an XMP sidecar edited or removed since" in r.stdout, r.stdout
    assert {Path(p).stem for p in (out / "audit-outdated.txt").read_text().splitlines()} == {"lr", "dt"}
    r = run_cli("audit", out)  # a plain audit keeps what the last check found (it wrote the list anew)
    assert "edited or removed since (as the last audit --check-inputs found; not read again)" in r.stdout, r.stdout
    assert {Path(p).stem for p in (out / "audit-outdated.txt").read_text().splitlines()} == {"lr", "dt"}
    r = run_cli("export", out, tmp_path / "e.csv")  # and so does the export, which reads no sidecar
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "e.csv", encoding="utf-8-sig") as f:
        assert {Path(x["source_path"]).stem: x["output_record"] for x in csv.DictReader(f)} == {
            "lr": "outdated", "dt": "outdated"}
    (scans / "dt.jpg.xmp").unlink()
    r = run_cli("run", "-o", out, "--redo", out / "audit-outdated.txt")
    assert r.returncode == 0, r.stderr
    got = json.loads(subprocess.run(["exiftool", "-j", "-XMP-dc:Rights", "-XMP-dc:Title", "-r", out / "images"],
                                    capture_output=True, text=True, check=True).stdout)
    got = {Path(g["SourceFile"]).stem: g for g in got}
    assert got["lr"]["Rights"] == "withdrawn: do not publish" and got["dt"]["Title"] == "old title"
    r = run_cli("audit", out)  # redone since: no longer outdated
    assert r.returncode == 0 and "XMP sidecar" not in r.stdout and not (out / "audit-outdated.txt").exists()
    r = run_cli("audit", out, "--check-inputs")
    assert r.returncode == 0 and "XMP sidecar" not in r.stdout, r.stdout
    # a sidecar missing or unreadable at the run and put right since is an outdated record too
    (scans / "lr.xmp").write_bytes(b"<x:xmpmeta broken")
    (again := tmp_path / "again.txt").write_text("\n".join(r["source_path"] for r in Outdir(out).read_results().to_pylist()))
    r = run_cli("run", "-o", out, "--redo", again)
    assert r.returncode == 0, r.stderr
    read = {Path(r["source_path"]).stem: r for r in Outdir(out).read_results().to_pylist()}
    assert read["dt"]["sidecar_sha256"] == "missing" and "XMP sidecar lr.xmp not read (unreadable" in read["lr"]["notes"]
    r = run_cli("audit", out, "--check-inputs")
    assert r.returncode == 0 and "XMP sidecar" not in r.stdout, r.stdout  # as they were at the run
    (scans / "dt.jpg.xmp").write_bytes(_sidecar('<dc:title><rdf:Alt><rdf:li xml:lang="x-default">found'
                                                '</rdf:li></rdf:Alt></dc:title>'))
    (scans / "lr.xmp").write_bytes(_sidecar('<dc:rights><rdf:Alt><rdf:li xml:lang="x-default">mended'
                                            '</rdf:li></rdf:Alt></dc:rights>'))
    r = run_cli("audit", out, "--check-inputs")
    assert "2 outputs carry the record of an XMP sidecar edited or removed since" in r.stdout, r.stdout


def test_a_sidecar_is_found_wherever_the_scan_ran_and_one_left_behind_by_a_rename_is_said(tmp_path, ckpt):
    """`colorize scan scans -o other/m.parquet` kept the sidecar as `scans/lr.xmp`, relative to
    where the scan ran, and the run read it from the manifest's folder: the rights were lost. A
    rescan called a done picture's sidecar "not a picture"; a picture renamed without its
    sidecar lost its rights without a word."""
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True,
                              text=True, timeout=120, cwd=tmp_path)

    scans, other = tmp_path / "scans", tmp_path / "other"
    scans.mkdir()
    other.mkdir()
    for name in ("lr", "w"):
        Image.new("L", (32, 24), 90).save(scans / f"{name}.tif")
        (scans / f"{name}.xmp").write_bytes(_sidecar(
            '<dc:rights><rdf:Alt><rdf:li xml:lang="x-default">© NB</rdf:li></rdf:Alt></dc:rights>'))
    man, out = other / "m.parquet", tmp_path / "out"
    assert cli("scan", "scans", "-o", man, "-q").returncode == 0
    assert pq.read_table(man).column("xmp_sidecar").to_pylist() == [str(scans / "lr.xmp"), str(scans / "w.xmp")]
    r = cli("run", "--manifest", man, "-o", out, "--checkpoint", ckpt, "--size", "32", "-q")
    assert r.returncode == 0, r.stderr
    notes = {Path(x["source_path"]).stem: x["notes"] or "" for x in Outdir(out).read_results().to_pylist()}
    assert "XMP sidecar lr.xmp read" in notes["lr"] and "not read" not in notes["lr"], notes
    # a manifest an earlier version wrote so: its sidecars are read beside their pictures
    t = pq.read_table(man)
    pq.write_table(t.set_column(t.column_names.index("xmp_sidecar"), "xmp_sidecar",
                                pa.array(["scans/lr.xmp", "scans/w.xmp"])), other / "old.parquet")
    r = cli("run", "--manifest", other / "old.parquet", "-o", tmp_path / "old", "--checkpoint", ckpt, "--size", "32", "-q")
    assert r.returncode == 0, r.stderr
    notes = [x["notes"] or "" for x in Outdir(tmp_path / "old").read_results().to_pylist()]
    assert all("XMP sidecar" in n and "not read" not in n for n in notes), notes
    r = cli("scan", "scans", "-o", other / "old.parquet")  # rescanned: its own, mended, not orphans
    assert r.returncode == 0 and "no picture of its name" not in r.stderr, r.stderr
    assert pq.read_table(other / "old.parquet").column("xmp_sidecar").to_pylist() == [
        str(scans / "lr.xmp"), str(scans / "w.xmp")]
    r = cli("scan", "scans", "-o", man, "--report", tmp_path / "rep.csv")  # nothing new
    assert "not pictures" not in r.stderr and "orphan" not in r.stderr, r.stderr
    (scans / "w.tif").rename(scans / "w2.tif")  # renamed without its sidecar
    r = cli("scan", "scans", "-o", man, "--report", tmp_path / "rep.csv")
    assert ("1 XMP sidecar with no picture of its name (a picture renamed without it? name it as "
            "its picture, NAME.xmp or NAME.EXT.xmp, and scan again; --report lists them: orphan_xmp): scans/w.xmp") in r.stderr, r.stderr
    # whole in the report, as every path there is (a trial's mixed relative and whole ones)
    assert f"orphan_xmp,{scans / 'w.xmp'}" in (tmp_path / "rep.csv").read_text(encoding="utf-8-sig")
    (scans / "w.xmp").rename(scans / "w2.xmp")  # as said: taken into the row done before
    r = cli("scan", "scans", "-o", man)
    assert "1 file scanned before now has an XMP sidecar: taken into the manifest; the outputs made before lack" in r.stderr
    rows = {Path(x["path"]).name: x["xmp_sidecar"] for x in pq.read_table(man).to_pylist()}
    assert rows["w2.tif"] == str(scans / "w2.xmp")


@pytest.mark.parametrize("fmt", ["tiff", "png", "jpeg"])
def test_a_bigtiff_masters_tags_and_a_resolution_in_cm_are_kept(tmp_path, photo, fmt):
    """Large masters are BigTIFF (its EXIF, as Pillow re-wrote it, was BigTIFF too, which no
    reader takes: Make, Artist and Copyright were lost, and a PNG lost its dpi with them); a
    capture spec may state pixels per centimetre; tifffile's shape JSON is not a caption."""
    from pipeline.worker.writers import encode_output, provenance

    src = tmp_path / "master.tif"
    tifffile.imwrite(src, photo.astype(np.uint16) * 257, bigtiff=True, photometric="minisblack",
                     resolution=(236.22, 236.22), resolutionunit="CENTIMETER",
                     extratags=[(271, "s", 0, "PhaseOne", True), (315, "s", 0, "Jan Kowalski", True),
                                (33432, "s", 0, "(c) Biblioteka Narodowa", True)])
    d = decode(src)
    data, notes = encode_output(np.dstack([d.gray] * 3), fmt, d, 90,
                                provenance("c" * 64, "2026-12-02", "s" * 64))
    assert not any("not carried" in n for n in notes), notes
    assert ("16-bit scan written as an 8-bit JPEG (--format png or tiff keeps 16)" in notes) == (fmt == "jpeg")
    out = Image.open(io.BytesIO(data))
    tags = out.getexif()
    assert (tags[271], tags[315], tags[33432]) == ("PhaseOne", "Jan Kowalski", "(c) Biblioteka Narodowa")
    if fmt == "tiff":
        assert tags[296] == 3 and abs(float(tags[282]) - 236.22) < 0.01  # per cm, as stated
        assert tags[270].startswith("Machine-colorized by")  # not {"shape": [120, 160]}
    else:
        assert abs(out.info["dpi"][0] - 600.0) < 0.1


def test_an_images_folder_linked_into_the_sources_never_replaces_an_original(tmp_path, photo, ckpt, warm):
    """images/ made a symbolic link to another disk is an administrator's habit; one that leads
    into the scans (images/ itself, or a folder below it) would write the outputs over the
    originals of the same names. The run refuses the first; the second costs its images an error
    row, never an original. A folder holding files in images/ and no job.json is not ours."""
    import hashlib

    src = tmp_path / "scans"
    for d in ("a", "b"):
        (src / d).mkdir(parents=True)
        Image.fromarray(photo).save(src / d / "x.png")
    sha = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.rglob("*.png")}
    man = tmp_path / "m.parquet"
    assert run_cli("scan", src, "-o", man, "-q", "--shard-size", "1").returncode == 0
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "images").symlink_to(src)
    r = run_cli("run", "--manifest", man, "-o", linked, "--checkpoint", ckpt, "--size", "32", "-q")
    assert r.returncode == 2 and "OUTDIR's images/ (a link to" in r.stderr and \
        "holds source images" in r.stderr, r.stderr
    out = tmp_path / "out"
    assert run_cli("run", "--manifest", man, "-o", out, "--checkpoint", ckpt, "--size", "32",
                   "-q").returncode == 0
    shutil.rmtree(out / "images" / "b")  # b's outputs, and its commit, gone; b now leads to the scans
    (out / "images" / "b").symlink_to(src / "b")
    next((out / "results").glob("shard-00001.parquet")).unlink()
    r = run_cli("run", "-o", out, "-q")
    assert r.returncode == 0, r.stderr
    row = next(x for x in Outdir(out).read_results().to_pylist() if "/b/" in x["source_path"])
    assert row["status"] == "error" and "leads out of images/ through a symbolic link" in row["error"]
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.rglob("*.png")} == sha
    mine = tmp_path / "mine"
    (mine / "images").mkdir(parents=True)
    shutil.copy(src / "a" / "x.png", mine / "images" / "x.png")  # the user's own copy of a scan
    r = run_cli("run", "--manifest", man, "-o", mine, "--checkpoint", ckpt, "--size", "32", "-q")
    assert r.returncode == 2 and "is not a colorize output folder (no job.json) and is not empty: " \
        "it holds images/x.png" in r.stderr, r.stderr
    # images/ linked to an empty folder on another disk before the first run: taken (a trial's
    # was refused as a folder that "holds images"); one whose folder holds a file is not
    (tmp_path / "disk2" / ".Trashes").mkdir(parents=True)  # a Mac volume's own: not the user's
    (tmp_path / "disk2" / ".DS_Store").write_bytes(b"")
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "images").symlink_to(tmp_path / "disk2")
    r = run_cli("run", "--manifest", man, "-o", tmp_path / "fresh", "--checkpoint", ckpt, "--size", "32", "-q")
    assert r.returncode == 0 and (tmp_path / "disk2" / "a" / "x.png").exists(), r.stderr
    (tmp_path / "disk3").mkdir()
    (tmp_path / "disk3" / "note.txt").write_text("mine")
    (mine / "images").rename(tmp_path / "mine-images")
    (mine / "images").symlink_to(tmp_path / "disk3")
    r = run_cli("run", "--manifest", man, "-o", mine, "--checkpoint", ckpt, "--size", "32", "-q")
    assert r.returncode == 2 and "is not empty: it holds images/note.txt" in r.stderr, r.stderr


def test_a_folder_the_scan_cannot_read_is_said_and_the_audit_says_so_too(tmp_path, monkeypatch):
    """A roll's folder without read permission (as a service user finds it): os.walk skipped
    it in silence, its pictures were in no row, and the audit passed the job as whole."""
    from pipeline.cli import _audit_notes
    from pipeline.client.audit import _unread_folders

    box = tmp_path / "box"
    (box / "roll04").mkdir(parents=True)
    for p in (box / "a.png", box / "roll04" / "b.png"):
        Image.new("L", (16, 12), 90).save(p)
    real = os.scandir

    def scandir(path="."):  # as for a user without the folder's read permission (tests run as root)
        if str(path).endswith("roll04"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    said = []
    t = scan([str(box)], tmp_path / "m.parquet", log=said.append, report=tmp_path / "r.csv")
    assert [os.path.basename(p) for p in t.column("path").to_pylist()] == ["a.png"]
    assert any("1 folder could not be read, so none of its pictures is in the manifest" in s
               and "roll04: Permission denied" in s for s in said), said
    assert "unread_folder" in (tmp_path / "r.csv").read_text()
    folders = _unread_folders(pq.read_table(tmp_path / "m.parquet"))
    assert folders == [str(box / "roll04")]
    notes = _audit_notes({"record_outdated": [], "skipped": [], "errors": [], "unread_folders": folders}, "OUT")
    assert notes == [f"1 source folder could not be read at the scan, so none of its pictures is in this job: "
                     f"{box / 'roll04'} (make it readable, scan again into the manifest, and run: OUT goes on)"]
    # a catalogue that names a picture in it: not "a file that is not there"
    (box / "cat.csv").write_text("path,acc\na.png,1\nroll04/b.png,2\nroll04/gone.png,3\n")
    real_stat = os.stat

    def stat(path, *a, **k):
        if os.path.dirname(str(path)).endswith("roll04"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *a, **k)

    monkeypatch.setattr(os, "stat", stat)
    said.clear()
    scan([str(box / "cat.csv")], tmp_path / "m2.parquet", log=said.append)
    assert any("2 catalogue rows name a file in a folder this user cannot read (permission denied" in s
               for s in said), said
    assert not any("a file that is not there" in s for s in said)
    # a job's earlier manifest held b.png: the folder unreadable now, b.png is not recorded gone
    monkeypatch.setattr(os, "stat", real_stat)
    monkeypatch.setattr(os, "scandir", real)
    scan([str(box)], tmp_path / "m3.parquet", log=said.append)
    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "stat", stat)
    real_lstat = os.lstat
    monkeypatch.setattr(os, "lstat", lambda p, *a, **k: stat(p) if "roll04" in str(p) else real_lstat(p, *a, **k))
    t = scan([str(box)], tmp_path / "m3.parquet", log=said.append, extend=str(tmp_path / "m3.parquet"))
    states = dict(zip(t.column("path").to_pylist(), t.column("source_state").to_pylist(), strict=True))
    assert {os.path.basename(p): s for p, s in states.items()} == {"a.png": None, "b.png": None}
