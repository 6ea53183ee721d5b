import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.color import rgb2lab

from pipeline.worker import color
from pipeline.worker.engine import Colorizer
from pipeline.worker.imaging import net_input


@pytest.fixture(scope="module")
def net(ckpt):
    return Colorizer(ckpt, device="cpu", size=64)


def L_of_gray(gray: np.ndarray) -> np.ndarray:
    g = gray.astype(np.float64) / (65535.0 if gray.dtype == np.uint16 else 255.0)
    return color.gray_to_L(torch.from_numpy(g)).numpy()


def L_of_rgb(rgb: np.ndarray) -> np.ndarray:
    return rgb2lab(rgb.astype(np.float64) / (65535.0 if rgb.dtype == np.uint16 else 255.0))[..., 0]


def test_output_has_input_size_for_odd_sizes(net):
    rng = np.random.default_rng(0)
    grays = [rng.integers(0, 256, (h, w), dtype=np.uint8) for h, w in ((97, 131), (5, 3), (40, 700))]
    outs = net.colorize(grays)
    assert [o.shape for o in outs] == [(97, 131, 3), (5, 3, 3), (40, 700, 3)]
    assert all(o.dtype == np.uint8 for o in outs)


def test_recombination_keeps_L_8bit(net, photo_gray):
    rgb = net.colorize([photo_gray])[0]
    assert np.abs(L_of_rgb(rgb) - L_of_gray(photo_gray)).mean() < 0.5
    # and it is colour, not gray: the fixture net predicts a* ~ 13, b* ~ 25
    lab = rgb2lab(rgb)
    assert np.hypot(lab[..., 1], lab[..., 2]).mean() > 5


def test_recombination_keeps_L_16bit(net, photo_gray):
    g16 = (photo_gray.astype(np.uint16) * 257) ^ np.uint16(0x5A)  # use the low byte too
    rgb = net.colorize([g16])[0]
    assert rgb.dtype == np.uint16
    assert np.abs(L_of_rgb(rgb) - L_of_gray(g16)).mean() < 0.05


def delta_e(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """CIE76 colour difference per pixel of two 8-bit RGB images."""
    return np.sqrt(((rgb2lab(x) - rgb2lab(y)) ** 2).sum(-1))


def test_table_is_the_exact_lab_conversion(net):
    """At whole a*, b* the lookup is lab_to_rgb(keep_L) in float64, rounded: no approximation
    but the quantisation of a/b. Out-of-gamut pairs included (gamut mapping keeps L*)."""
    ramp = np.arange(256, dtype=np.uint8)[None].repeat(3, 0)  # every gray level
    for a, b in ((0, 0), (13, 25), (-40, 60), (90, -100), (127, 127), (-128, -128)):
        ab = torch.tensor([a, b], dtype=torch.float32).view(2, 1, 1).expand(2, 4, 4)
        out = net.recombine(ramp, ab)
        L = torch.from_numpy(L_of_gray(ramp))
        lab = torch.stack([L, torch.full_like(L, a), torch.full_like(L, b)])
        ref = (color.lab_to_rgb(lab, keep_L=True) * 255).round().to(torch.uint8).permute(1, 2, 0)
        assert np.array_equal(out, ref.numpy()), (a, b)


def test_the_colour_table_is_kept_for_the_next_process_and_a_torn_copy_is_built_again(tmp_path, monkeypatch):
    import pipeline.worker.recombine as recombine

    monkeypatch.setenv("COLORIZE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(recombine, "_LUT8", None)
    built = recombine.lut8()
    kept = list((tmp_path / "cache").iterdir())
    assert [p.name[:5] for p in kept] == ["lut8-"] and kept[0].suffix == ".npy"  # no temp left
    builds = []
    monkeypatch.setattr(recombine, "_build_lut8", lambda: builds.append(1) or built)  # counted, not ~1.5 s
    monkeypatch.setattr(recombine, "_LUT8", None)  # the next process
    again = recombine.lut8()
    assert isinstance(again, np.memmap) and np.array_equal(again, built) and not builds
    for torn in (kept[0].read_bytes()[:4096], b""):  # cut short, or empty after a crash
        kept[0].write_bytes(torn)
        monkeypatch.setattr(recombine, "_LUT8", None)
        assert recombine.lut8() is built and kept[0].stat().st_size == built.nbytes + 128
        monkeypatch.setattr(recombine, "_LUT8", None)
        assert np.array_equal(recombine.lut8(), built)  # and the next process maps it again
    assert len(builds) == 2 and [p.name for p in (tmp_path / "cache").iterdir()] == [kept[0].name]
    (tmp_path / "a file").write_text("not a folder")
    for where in ("off", str(tmp_path / "a file")):  # no cache, or one that cannot be written
        monkeypatch.setenv("COLORIZE_CACHE", where)
        monkeypatch.setattr(recombine, "_LUT8", None)
        assert recombine.lut8() is built
    assert len(builds) == 4 and (tmp_path / "a file").read_text() == "not a folder"


def test_upsampling_close_to_full_interpolate(net, photo_gray, monkeypatch):
    """Strip-wise upsampling of the 8-bit a/b stays within a unit of the float bilinear
    upsampling of the whole: invisible (a just-noticeable difference is ~2.3)."""
    import pipeline.worker.recombine as recombine

    g = photo_gray[:90, :70]
    ab = net.predict_ab(net_input(g, 64)[None])[0]
    full = F.interpolate(ab[None], size=g.shape, mode="bilinear", align_corners=False)[0]
    lab = torch.cat([torch.from_numpy(L_of_gray(g)).float()[None], full])
    ref = (color.lab_to_rgb(lab, keep_L=True) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    whole = net.recombine(g, ab)
    monkeypatch.setattr(recombine, "TILE_PIXELS", 70 * 7)  # force many strips
    strips = net.recombine(g, ab)
    strips_dev = net.colors._recombine8_device(g, net.quantise_ab(ab))
    for out in (whole, strips, strips_dev):
        de = delta_e(out, ref)
        assert de.mean() < 0.5 and de.max() < 3.0
    assert delta_e(strips, whole).max() < 2.0


def test_device_kernel_matches_host(net):
    """The torch kernel (used on CUDA) against Pillow + numpy (CPU), both run here."""
    from skimage import data

    g = np.asarray(Image.fromarray(data.astronaut()).convert("L").resize((600, 450)))
    abq = net.quantise_ab(net.predict_ab(net_input(g, 64)[None])[0])
    host, dev = net.recombine(g, abq), net.colors._recombine8_device(g, abq)
    assert host.shape == dev.shape == (450, 600, 3)
    de = delta_e(host, dev)
    assert de.mean() < 0.3 and de.max() < 3.0


def test_quantised_ab_refused_for_16bit(net, photo_gray):
    ab = net.predict_ab(net_input(photo_gray, 64)[None])[0]
    with pytest.raises(ValueError, match="16-bit"):
        net.recombine(photo_gray.astype(np.uint16) * 257, net.quantise_ab(ab))


def test_bad_size_is_refused(ckpt):
    from pipeline.errors import UsageError

    with pytest.raises(UsageError, match="multiple of 8"):  # the user's mistake: exit 2, one line
        Colorizer(ckpt, size=100)


@pytest.mark.gpu
def test_cuda_matches_cpu(ckpt, photo_gray):
    cpu = Colorizer(ckpt, device="cpu", size=64).colorize([photo_gray])[0]
    gpu = Colorizer(ckpt, device="cuda", size=64).colorize([photo_gray])[0]
    assert np.abs(cpu.astype(int) - gpu.astype(int)).mean() < 2  # bf16 autocast on the GPU


def test_compiled_strip_matches_eager(ckpt, photo_gray):
    eager = Colorizer(ckpt, device="cpu", size=64)
    fused = Colorizer(ckpt, device="cpu", size=64, compile=True)
    for g in (photo_gray[:77, :131], photo_gray.astype(np.uint16) * 257):
        ab = eager.predict_ab(net_input(g, 64)[None])[0]
        a, b = eager.recombine(g, ab), fused.recombine(g, ab)
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # last-bit differences only


def _jpeg(gray: np.ndarray, **kw) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("backend", ["torchcodec", "torchvision"])
def test_device_jpeg_decoder_matches_pillow(net, photo_gray, backend):
    """Both decoders the GPU path can use (here on the CPU) give Pillow's pixels; a file one
    refuses is None in its place and the others still decode."""
    import io

    from pipeline.worker.jpegdev import DeviceJpeg

    pytest.importorskip(backend)
    files = [_jpeg(photo_gray), b"\xff\xd8 not a jpeg \xff\xd9", _jpeg(photo_gray[:100, :77].copy())]
    out = DeviceJpeg(torch.device("cpu"), 64, backend=backend).decode(files)
    assert out[1] is None
    for f, t in ((files[0], out[0]), (files[2], out[2])):
        ref = np.asarray(Image.open(io.BytesIO(f)))
        assert t.dtype == torch.uint8 and tuple(t.shape) == ref.shape
        assert np.abs(t.numpy().astype(int) - ref).max() <= 1


def test_device_net_input_is_close_to_pillows(net, photo_gray):
    from pipeline.worker.imaging import net_input as host_input

    dev = net.jpeg.small(torch.from_numpy(photo_gray)).numpy()
    assert dev.shape == (64, 64) and dev.dtype == np.uint8
    assert np.abs(dev.astype(int) - host_input(photo_gray, 64)).mean() < 1.5


def test_compiled_net_runs_short_batches_at_the_jobs_batch_size(ckpt):
    """A short batch is padded to pad_to, so a compiled net sees one shape per job: its a/b are
    exactly those of the full batch it stands for, and close to the eager net's."""
    fused = Colorizer(ckpt, device="cpu", size=32, compile=True)
    eager = Colorizer(ckpt, device="cpu", size=32)
    x = np.random.default_rng(5).integers(0, 256, (3, 32, 32), dtype=np.uint8)
    # pad rows are L* = 0, as zeros of L*/100; a gray level of 0 is L* = 0 too
    full = fused.predict_ab(np.concatenate([x, np.zeros((1, 32, 32), np.uint8)]))
    short = fused.predict_ab(x, pad_to=4)
    assert short.shape == (3, 2, 32, 32) and torch.equal(short, full[:3])
    assert (short - eager.predict_ab(x)).abs().max() < 0.5  # a*, b* units
