import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import on_cluster
from PIL import Image

import pipeline.cli

CLUSTER = ""  # where the runs of a test asking for `warm` go (conftest.warm); else a local cluster


def main(args) -> int:
    return pipeline.cli.main(on_cluster(args, CLUSTER))


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *on_cluster(args, CLUSTER)],
                          capture_output=True, text=True, timeout=120)


def test_image_16bit_tiff_in_16bit_tiff_out(tmp_path, ckpt, photo_gray):
    import tifffile

    g16 = photo_gray[:100, :150].astype(np.uint16) * 257
    Image.fromarray(g16).save(tmp_path / "scan.tif", dpi=(600, 600))
    assert main(["image", str(tmp_path / "scan.tif"), str(tmp_path / "out.tif"),
                 "--checkpoint", ckpt, "--size", "64", "--device", "cpu"]) == 0
    with tifffile.TiffFile(tmp_path / "out.tif") as t:
        page = t.pages[0]
        assert page.dtype == np.uint16 and page.shape == (100, 150, 3)
        assert page.tags["XResolution"].value == (600, 1)


def test_a_name_that_is_there_but_no_file_is_said_as_what_it_is(tmp_path, capsys):
    """`ls` shows it, so "not found" sent a trial looking for a typo: a pipe, a link that leads
    nowhere or round in a loop, named to image or scan, is said as such (exit 2); an option
    after `--` is told to go before it."""
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "dangling.jpg").symlink_to("nowhere.jpg")
    (tmp_path / "a.jpg").symlink_to("b.jpg")
    (tmp_path / "b.jpg").symlink_to("a.jpg")
    for name, why in (("pipe.jpg", "is not a regular file (a pipe, a socket, a device)"),
                      ("dangling.jpg", "is a broken symbolic link: it points to nowhere.jpg, which is not there"),
                      ("a.jpg", "is a loop of symbolic links")):
        src = str(tmp_path / name)
        assert main(["image", src, str(tmp_path / "x.png")]) == 2
        assert f"input {src} {why}" in capsys.readouterr().err
        assert main(["scan", src, "-o", str(tmp_path / "m.parquet")]) == 2
        assert f"source {src} {why}" in capsys.readouterr().err
    assert main(["image", "--", str(tmp_path / "pipe.jpg"), str(tmp_path / "x.png"), "--size", "32"]) == 2
    assert "(--size: options go before `--`)" in capsys.readouterr().err
    assert main(["image", "a.jpg", "b.jpg", "c.jpg", "--version"]) == 2  # no `--`: no such hint
    err = capsys.readouterr().err
    assert "(--version: an option of colorize itself, not of image: `colorize --version`)" in err, err
    # argparse takes a value beginning "-1," for an option: the user is shown how to give it
    assert main(["image", "a.jpg", "b.png", "--hint", "-1,2,#ff0000"]) == 2
    err = capsys.readouterr().err
    assert "--hint: expected one argument (a value that begins with '-' is joined to it by '=': --hint=-1,2,#ff0000)" in err, err
    assert main(["image", "a.jpg", "b.png", "--hint"]) == 2
    assert "--hint: expected one argument (see" in capsys.readouterr().err


def test_image_exif_rotated_comes_out_upright(tmp_path, ckpt, photo_gray):
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 270 CW to view
    Image.fromarray(photo_gray[:60, :100]).transpose(Image.ROTATE_270).save(
        tmp_path / "r.jpg", exif=exif.tobytes())
    assert main(["image", str(tmp_path / "r.jpg"), str(tmp_path / "o.png"), "--checkpoint", ckpt,
                 "--size", "64"]) == 0
    out = Image.open(tmp_path / "o.png")
    assert out.size == (100, 60)
    assert out.getexif().get(0x0112, 1) == 1


@pytest.mark.parametrize("args,msg", [
    (["image", "missing.png", "o.png"], "input not found"),
    (["image", "", "o.png"], "got an empty name"),  # not "the current folder is a folder"
    (["image", "IN", "o.gif"], "output must end in"),
    (["image", "IN", "o.png", "--size", "100"], "multiple of 8"),
    (["image", "IN", "o.png", "--checkpoint", "nope.pt"], "checkpoint not found"),
    (["image", "IN", "o.png", "--checkpoint", "IN"], "is not a checkpoint (a .pt file that torch.save wrote)"),
    (["image", "IN", "o.png", "--bogus"], "unrecognized arguments"),
    (["frobnicate"], "no command 'frobnicate' (see `colorize --help`)"),
    (["staus", "out"], "no command 'staus': did you mean status?"),
    (["run", "m.parquet", "-o", "out"], "unrecognized arguments: m.parquet (a manifest is named with --manifest m.parquet)"),
    (["status", "no/such/dir"], "no/such/dir not found: name a run's output folder (its -o OUTDIR)"),
    (["status", "IN"], "in.png is a file; name the run's output folder"),
    (["image", "IN", "/tmp/"], "/tmp/ is a folder; OUT names the file to write, e.g. /tmp/in.png"),
    (["run", "--manifest", "m.parquet", "-o", "out", "--workers", "two"],
     "argument --workers: 'two' is not a whole number (see `colorize run --help`)"),
    (["train", "no/such/folder"], "not found"),
    (["train", "IN", "--lr", "-1"], "--lr: must be > 0"),
    (["run", "-o", "no/such/dir"], "/no/such/dir to continue (no job.json)"),
    (["export", "IN", "/nonexistent/x.csv"], "no folder /nonexistent to write x.csv in"),
    (["export", "IN", "x.json"], "x.json would be a CSV under another name"),
    (["run", "--manifest", "m.parquet", "-o", "IN"], "in.png is a file; OUTDIR is a folder (made if missing)"),
    (["run", "--manifest", "m.parquet", "-o", "out", "--workers", "-2"], "--workers: must be >= 0"),
    (["run", "--manifest", "m.parquet", "-o", "out", "--threads", "-1"], "--threads: must be >= 0"),
    (["run", "--manifest", "m.parquet", "-o", "out", "--quality", "300"], "must be 1 to 100"),
    (["run", "--manifest", "m.parquet", "-o", "out", "--resource-timeout", "0"], "must be > 0"),
    (["review", "out", "--port", "99999"], "--port: must be 0 to 65535, got 99999"),
    (["run", "--manifest", "m.parquet", "-o", "out", "--scheduler", "http://127.0.0.1:1"],
     "--scheduler 'http://127.0.0.1:1' is not a dask scheduler's address (unknown address scheme"),
    (["run", "--manifest", "m.parquet", "-o", "out", "--scheduler", " "], "--scheduler is empty"),
    (["run", "--manifest", "m.parquet", "-o", "out", "--scheduler", "tcp://127.0.0.1:99999"],
     "port 99999 is not a port (1-65535)"),
    (["run", "-o", "out", "--redo-column", "Inventarnr"], "name the images too: --redo LIST"),
    (["run", "-o", "out", "--restart", "--repair"], "--restart discards the job's results and "
                                                    "starts over, and --repair works inside them"),
    (["run", "-o", "out", "--restart", "--hinted"], "and --hinted works inside them"),
    (["run", "--manifest", "", "-o", "out"], "--manifest is empty (an unset variable?)"),
])
def test_user_mistakes_exit_2_with_one_line(tmp_path, photo_gray, args, msg):
    Image.fromarray(photo_gray).save(tmp_path / "in.png")
    args = [str(tmp_path / "in.png") if a == "IN" else a for a in args]
    r = run_cli(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and msg in lines[0] and "Traceback" not in r.stderr


def test_bad_job_spec(tmp_path):
    (tmp_path / "bad.toml").write_text("epochs = [unterminated")
    r = run_cli("train", tmp_path / "bad.toml")
    assert r.returncode == 2 and "bad TOML" in r.stderr
    (tmp_path / "unk.toml").write_text('src = "x"\nfrobs = 3\n')
    r = run_cli("train", tmp_path / "unk.toml")
    assert r.returncode == 2 and "unknown key 'frobs'" in r.stderr
    (tmp_path / "notepad.toml").write_text('manifest = "m.parquet"\n', encoding="utf-16")
    r = run_cli("run", tmp_path / "notepad.toml")  # Windows Notepad's "Unicode"
    assert r.returncode == 2 and "notepad.toml is not UTF-8 text (byte 0" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "save it as UTF-8" in r.stderr


@pytest.mark.parametrize("line, phrase", [
    ('format = "gif"', "format = 'gif'; choose from png, jpeg, tiff, webp, same"),
    ("batch_size = 0", "batch_size"),
    ('recolor = "yes"', "recolor must be true or false"),
    ('jpeg_decode = "gpu"', "choose from cpu, device"),
])
def test_job_spec_values_are_checked_like_flags(tmp_path, line, phrase):
    """Spec values are defaults, which argparse does not check: one line and exit 2, before any
    image is touched (a bad format used to become an error row for every image)."""
    spec = tmp_path / "job.toml"
    spec.write_text(f'manifest = "m.parquet"\noutput = "out"\n{line}\n')
    r = run_cli("run", spec)
    assert r.returncode == 2 and phrase in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_help_explains_itself():
    r = run_cli("--help")
    assert r.returncode == 0 and "image" in r.stdout and "train" in r.stdout
    r = run_cli("image", "--help")
    assert r.returncode == 0 and "--checkpoint" in r.stdout


def test_bundled_demo_manifest_is_current(tmp_path):
    """manifests/demo.parquet must describe pipeline/samples as they are (make manifest)."""
    import pyarrow.parquet as pq

    from pipeline.client.manifest import scan

    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    fresh = scan([str(root / "pipeline" / "samples")], tmp_path / "m.parquet", shard_size=4,
                 progress=False)
    committed = pq.read_table(root / "manifests" / "demo.parquet")
    cols = ["shard", "rel_path", "out_stem", "width", "height", "mode", "format", "scan_error"]
    assert committed.select(cols).to_pylist() == fresh.select(cols).to_pylist()
    assert all(p.startswith("../pipeline/samples/") for p in committed.column("path").to_pylist())


def test_unusable_outdir_is_a_one_line_error(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "afile").write_text("x")
    r = run_cli("run", "--manifest", root / "manifests" / "demo.parquet", "-o",
                tmp_path / "afile" / "out", "--dry-run")
    # a dry run writes nothing, but says what a real run would meet
    assert r.returncode == 2 and "Not a directory" in r.stderr, r.stderr
    assert not (tmp_path / "afile").is_dir()
    r = run_cli("run", "--manifest", root / "manifests" / "demo.parquet", "-o",
                tmp_path / "afile" / "out", "-q")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Not a directory" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("text, what", [("", "empty"), ('{"spec": {"manif', "cut short or not what a run writes"),
                                         ("[]", "cut short or not what a run writes")])
def test_a_damaged_job_json_is_said_by_every_command(tmp_path, capsys, text, what):
    """A copy to a full disk left it empty: each command said a JSONDecodeError's traceback."""
    from pipeline import cli

    out = tmp_path / "out"
    (out / "results").mkdir(parents=True)
    (out / "job.json").write_text(text)
    for args in (["status", out], ["audit", out], ["export", out, tmp_path / "e.csv"], ["run", "-o", out],
                 ["review", out, "--no-browser"]):
        code = cli.main([str(a) for a in args])
        err = capsys.readouterr().err
        assert code == 2 and err == (f"colorize: error: {out / 'job.json'} is damaged ({what}): it records "
                                     "the job every other file here belongs to; put back the one the run "
                                     "wrote (a backup, or the folder this one was copied from), or start "
                                     "the job anew in another OUTDIR\n"), (args, err)
    assert not (tmp_path / "e.csv").exists() and (out / "job.json").read_text() == text


def test_a_bug_is_not_dressed_as_a_user_mistake(monkeypatch, capsys):
    """Only UsageError (and its kin) is a one-line exit 2; any other ValueError is a bug and
    surfaces with its traceback (exit 1 from the interpreter)."""
    from pipeline import cli

    def broken(a):
        raise ValueError("an index went negative")

    monkeypatch.setattr(cli, "cmd_status", broken)
    with pytest.raises(ValueError, match="went negative"):
        cli.main(["status", "somewhere"])
    r = run_cli("run", "--manifest", "nowhere.parquet", "-o", "x")
    assert r.returncode == 2 and "manifest not found" in r.stderr


def test_command_line_fits_peoples_habits(tmp_path):
    from pipeline.cli import build_parser

    root = Path(__file__).resolve().parents[1]
    assert build_parser().parse_args(["run", "--format", "jpg"]).format == "jpeg"
    r = run_cli("run", "--shard_size", "4", "--manifest", root / "manifests" / "demo.parquet")
    assert r.returncode == 2 and "did you mean --batch-size" not in r.stderr
    r = run_cli("run", "--batch_size", "4", "--dry-run")
    assert r.returncode == 2 and "--batch_size: did you mean --batch-size?" in r.stderr
    (tmp_path / "job.toml").write_text(f'manifest = "{root / "manifests" / "demo.parquet"}"\n'
                                       f'output = "{tmp_path / "out"}"\nformats = "png"\n')
    r = run_cli("run", "--dry-run", tmp_path / "job.toml")  # the spec after a flag works too
    assert r.returncode == 2 and "unknown key 'formats'; did you mean 'format'?" in r.stderr
    (tmp_path / "job.toml").write_text(f'manifest = "{root / "manifests" / "demo.parquet"}"\n'
                                       f'output = "{tmp_path / "out"}"\nformat = "jpg"\n')
    r = run_cli("run", "--dry-run", tmp_path / "job.toml")
    assert r.returncode == 0 and "pending" in r.stdout, r.stderr
    text = " ".join(run_cli("run", "--help").stdout.split())  # argparse wraps lines
    assert "(default: 256)" in text and "(default: png)" in text


def test_an_outdir_is_said_whole_wherever_it_was_named_from(tmp_path, monkeypatch, capsys):
    """A cron log is read from another folder than the run's: its "resume with" and "no job in"
    lines named OUTDIR relative to the folder the run started in, and a spec's OUTDIR relative
    to that too ("tmp/trial35/out7" run from /): pasted elsewhere, they named no job (a trial)."""
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "nightly.toml").write_text('output = "../out"\n')
    monkeypatch.chdir("/")
    assert main(["run", str(tmp_path / "jobs" / "nightly.toml")]) == 2
    assert f"no job in {tmp_path / 'out'} to continue" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert main(["run", "-o", "out"]) == 2
    assert f"no job in {tmp_path / 'out'} to continue" in capsys.readouterr().err
    (tmp_path / "deep" / "er").mkdir(parents=True)  # "link/.." is where the system takes it: deep/
    (tmp_path / "link").symlink_to(tmp_path / "deep" / "er")
    assert main(["run", "-o", "link/../out"]) == 2
    assert f"no job in {tmp_path / 'link' / '..' / 'out'} to continue" in capsys.readouterr().err


@pytest.mark.slow
def test_a_flag_on_a_finished_job_is_honoured_or_refused_never_dropped(tmp_path, ckpt, capsys):
    """Which options the user named comes from argparse itself: abbreviations and --flag=value
    count as named, so each changed identity option is refused with old -> new (issue 21)."""
    from dataclasses import fields

    from pipeline.client.jobspec import JobSpec

    src = tmp_path / "s"
    src.mkdir()
    Image.fromarray(np.full((16, 16), 120, np.uint8)).save(src / "a.png")
    (src / "list.csv").write_text("path,Titel\na.png,Hof\n")
    man, out = tmp_path / "m.parquet", tmp_path / "out"
    assert main(["scan", str(src / "list.csv"), "-o", str(man), "-q"]) == 0
    assert main(["run", "--manifest", str(man), "-o", str(out), "--checkpoint", ckpt, "--size",
                 "32", "-q", "--device", "cpu"]) == 0
    lines = [("--batch", "4", "batch_size 8 -> 4"), ("--for", "tiff", "format png -> tiff"),
             ("--si", "320", "size 32 -> 320"), ("--batch-size", "4", "batch_size 8 -> 4"),
             ("--format=tiff", None, "format png -> tiff"),
             ("--rec", None, "recolor False -> True"), ("--comp", None, "compile False -> True"),
             ("--jpeg-d", "device", "jpeg_decode cpu -> device"),
             ("--max-pix", "1000", "max_pixels 200000000 -> 1000"),
             ("--dev", "cuda", "device cpu -> cuda"),  # or, with no GPU here, refused as such
             ("--metadata-col", "none", "metadata_columns title=Titel -> none")]
    named = {"--" + f.name.replace("_", "-") for f in fields(JobSpec) if f.metadata["identity"]}
    assert {next(n for n in named if n.startswith(flag.split("=")[0])) for flag, _, _ in lines} == named - {"--quality"}
    for flag, value, said in lines:
        capsys.readouterr()
        assert main(["run", "-o", str(out), flag, *([value] if value else [])]) == 2, flag
        err = capsys.readouterr().err
        assert said in err or (flag == "--dev" and "no CUDA device is available" in err), flag
    # a lossless output has no quality: said so, not refused as another job (a trial's was)
    capsys.readouterr()
    assert main(["run", "-o", str(out), "--qual", "80"]) == 0
    said = capsys.readouterr().out
    assert "--quality 80: not used by png outputs (lossless); it is for --format jpeg and webp" in said
    assert f"nothing to do: its one shard of {out} is committed" in said, said  # not "all 1 shards"


@pytest.mark.slow
def test_rescan_into_the_same_manifest_then_rerun_just_works(tmp_path, ckpt, capsys, warm):
    """Users rescan a grown folder into the same file and run again (issue 21, item 6)."""
    import hashlib

    src = tmp_path / "scans"
    src.mkdir()
    rng = np.random.default_rng(21)

    def add(name):
        Image.fromarray(rng.integers(0, 255, (20, 28), dtype=np.uint8)).save(src / name)

    for i in range(25):
        add(f"m{i:02d}.png")
    man, out = tmp_path / "m.parquet", tmp_path / "out"
    run = ["run", "--manifest", str(man), "-o", str(out), "--checkpoint", ckpt, "--size", "32", "-q"]
    assert main(["scan", str(src), "-o", str(man), "-q", "--shard-size", "4"]) == 0
    assert main(run) == 0
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (out / "images").iterdir()}
    for n in ("a1.png", "a2.png", "a3.png"):  # they sort first: a fresh scan would reshuffle shards
        add(n)
    capsys.readouterr()
    assert main(["scan", str(src), "-o", str(man), "-q"]) == 0
    err = capsys.readouterr().err
    assert "its rows, ids and shards are kept" in err
    assert "25 files scanned before, 3 new, 0 changed, 0 gone" in err
    # this morning's normal, not a crash: status and audit say the manifest grew
    assert main(["status", str(out)]) == 0
    assert capsys.readouterr().out.startswith("the manifest grew (new scans not yet run): 7 of 8 shards")
    assert main(["audit", str(out), "-q"]) == 3
    assert "audit incomplete: the manifest grew (new scans not yet run): 7 of 8 shards committed; " \
           "run with: colorize run -o" in capsys.readouterr().out
    capsys.readouterr()  # before the first run: still one JSON object, and exit 2
    assert main(["status", str(tmp_path / "not-yet"), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["state"] == "no_job"
    assert main(["status", str(out), "--json"]) == 0  # what a monitor reads
    said = json.loads(capsys.readouterr().out)
    assert (said["state"], said["committed"], said["pending"], said["images"]) == ("grown", 7, 1, 28)
    assert main(run) == 0
    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "complete"
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (out / "images").iterdir()}
    assert set(after) - set(before) == {"a1.png", "a2.png", "a3.png"}
    assert {k: after[k] for k in before} == before
    assert main(["audit", str(out), "-q"]) == 0
    # --fresh starts over, and the job then says it is another one
    assert main(["scan", str(src), "-o", str(man), "-q", "--fresh", "--shard-size", "4"]) == 0
    assert main(run) == 2


def test_a_file_that_is_no_checkpoint_is_refused_before_a_job_is_planned(tmp_path, photo_gray):
    """--checkpoint catalogue.csv by mistake: one line, exit 2, and no OUTDIR tied to it."""
    (tmp_path / "scans").mkdir()
    Image.fromarray(photo_gray).save(tmp_path / "scans" / "a.png")
    (tmp_path / "cat.csv").write_text("path\na.png\n")
    assert run_cli("scan", tmp_path / "scans", "-o", tmp_path / "m.parquet", "-q").returncode == 0
    r = run_cli("run", "--manifest", tmp_path / "m.parquet", "-o", tmp_path / "out",
                "--checkpoint", tmp_path / "cat.csv")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "is not a checkpoint" in r.stderr
    assert not (tmp_path / "out" / "job.json").exists()


def test_workers_that_cannot_see_outdir_or_the_scans_are_told_before_any_shard():
    from pipeline.client.cluster import check_workers_see
    from pipeline.errors import JobError

    class Cluster:  # client.run: the function on every worker, by address
        def run(self, f):
            return {"tcp://10.0.0.7:40000": f(), "tcp://10.0.0.8:40000": f()}

    with pytest.raises(JobError, match=r"2 workers \(e.g. tcp://10.0.0.7:40000\) cannot see OUTDIR "
                       r"/mnt/nowhere/out and the scans \(/mnt/nowhere/a.tif\), which this machine "
                       r"sees: mount them at the same paths on every worker"):
        check_workers_see(Cluster(), "/mnt/nowhere/out", "/mnt/nowhere/a.tif")
    check_workers_see(Cluster(), "/", None)  # seen: nothing said
    check_workers_see(Cluster(), None, "s3://bucket/a.tif")  # an object store: every worker's


@pytest.mark.slow
def test_a_shard_committed_where_this_machine_does_not_see_it_fails_the_run(tmp_path, ckpt, monkeypatch,
                                                                           capsys):
    """A worker writing OUTDIR on another mount says "done"; the run must not."""
    from distributed import LocalCluster

    from pipeline.client.outdir import Outdir

    src = tmp_path / "scans"
    src.mkdir()
    for i in range(3):
        Image.new("L", (24, 16), 40 * i).save(src / f"{i}.png")
    man, out = tmp_path / "m.parquet", tmp_path / "out"
    assert main(["scan", str(src), "-o", str(man), "-q"]) == 0
    elsewhere = tmp_path / "the workers' mount"
    real = Outdir.write_shard

    def write_elsewhere(self, shard, table, carried=None):  # the worker's OUTDIR is another disk
        return real(Outdir(str(elsewhere)), shard, table, carried)

    monkeypatch.setattr(Outdir, "write_shard", write_elsewhere)
    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster:
        r = main(["run", "--manifest", str(man), "-o", str(out), "--checkpoint", ckpt, "--size", "32",
                  "-q", "--scheduler", cluster.scheduler_address])
    assert r == 1
    err = capsys.readouterr().err
    assert "was committed by a worker, but results/shard-00000.parquet is not in" in err, err
    assert "mount it at the same path on every worker" in err and f"--scheduler {cluster.scheduler_address}" in err
    assert not list((out / "results").glob("*.parquet"))


def test_one_job_run_into_two_outdirs_at_once_on_a_shared_cluster(tmp_path, ckpt):
    """Tasks of one key are one task to dask: the second run's shards were the first's, written
    into the first's OUTDIR, and the second failed saying its workers write elsewhere."""
    from distributed import LocalCluster

    src = tmp_path / "scans"
    src.mkdir()
    for i in range(6):
        Image.new("L", (24, 16), 30 * i).save(src / f"{i}.png")
    man = tmp_path / "m.parquet"
    assert main(["scan", str(src), "-o", str(man), "-q", "--shard-size", "2"]) == 0
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                      dashboard_address=":0") as cluster:
        runs = [subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--manifest", str(man), "-o",
                                  str(tmp_path / name), "--checkpoint", ckpt, "--size", "32", "-q",
                                  "--scheduler", cluster.scheduler_address],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for name in ("a", "b")]
        errs = [r.communicate(timeout=300)[1] for r in runs]
    assert [r.returncode for r in runs] == [0, 0], errs
    from pipeline.worker import shard  # the workers ran in this process: each run freed their net

    assert shard._COLORIZERS == {}
    for name in ("a", "b"):
        assert len(list((tmp_path / name / "results").glob("shard-*.parquet"))) == 3
        assert len(list((tmp_path / name / "images").glob("*.png"))) == 6


def test_a_read_only_outdir_is_audited_all_the_same(tmp_path, ckpt, capsys, monkeypatch):
    """An institution audits a read-only replica: the verdict is given, the report not written."""
    import errno

    from pipeline.storage import Store

    src = tmp_path / "scans"
    src.mkdir()
    Image.new("L", (24, 16), 90).save(src / "a.png")
    man, out = tmp_path / "m.parquet", tmp_path / "out"
    assert main(["scan", str(src), "-o", str(man), "-q"]) == 0
    assert main(["run", "--manifest", str(man), "-o", str(out), "--checkpoint", ckpt, "--size", "32",
                 "-q"]) == 0
    capsys.readouterr()

    def read_only(self, rel, data):
        raise OSError(errno.EROFS, "Read-only file system", rel)

    monkeypatch.setattr(Store, "write_atomic", read_only)
    assert main(["audit", str(out), "-q"]) == 0
    said = capsys.readouterr().out
    assert said.startswith("audit passed: 1 manifest rows") and (
        f"no report written (Read-only file system in {out}; the verdict stands)") in said, said


def test_a_run_none_of_whose_originals_is_there_is_refused_not_made_error_rows(tmp_path, ckpt, capsys):
    """A migration trial: the archive moved (or its disk not mounted) under a manifest of whole
    paths, and the resume committed a "file not found" error row for every image, exit 0, and
    the audit passed. None there: refused, nothing run; one missing: its own error row."""
    man, out = small_archive(tmp_path, 3)
    arch = tmp_path / "scans"
    arch.rename(tmp_path / "moved")
    run = ["run", "--manifest", str(man), "-o", str(out), "--checkpoint", ckpt, "--size", "32", "-q"]
    assert main(run) == 2
    err = capsys.readouterr().err
    assert (f"none of the pending images' originals is where the manifest says ({arch / '00.png'} and 2 "
            "more looked at): is their disk mounted, or did the archive move? Nothing was run") in err, err
    assert not out.exists()  # made by the run refused: taken away again
    assert main([*run, "--dry-run"]) == 2  # the dry run says so too (it said "3 pending")
    assert "dry run: a real run would be refused: none of the pending images' originals" in capsys.readouterr().err
    (tmp_path / "moved").rename(arch)
    (arch / "00.png").unlink()  # one gone, the first looked at: its error row, the rest colorized
    assert main(run) == 0
    rows = {Path(r["source_path"]).name: r["status"] for f in (out / "results").glob("*.parquet")
            for r in __import__("pyarrow.parquet").parquet.read_table(f).to_pylist()}
    assert rows == {"00.png": "error", "01.png": "ok", "02.png": "ok"}
    # a job of one shard whose first file is gone is no moved archive either (a review's: refused)
    assert main(["scan", str(arch), "-o", str(tmp_path / "one.parquet"), "-q"]) == 0
    (arch / "01.png").unlink()
    assert main([*run[:2], str(tmp_path / "one.parquet"), "-o", str(tmp_path / "out1"), *run[5:]]) == 0


def test_a_ledger_made_its_own_on_a_full_disk_leaves_no_litter(tmp_path, monkeypatch):
    """Breaking the hard link copies the record first; a disk that fills during the copy must
    leave the record as it was and no half-written copy beside it."""
    import errno

    from pipeline.client import ledger

    rec = tmp_path / "commits.jsonl"
    rec.write_text('{"shard": 0, "sha256": "ab"}\n')
    os.link(rec, tmp_path / "other.jsonl")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ledger.os, "fsync", full)
    with pytest.raises(OSError):
        ledger._own(str(rec))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["commits.jsonl", "other.jsonl"]
    assert rec.read_text() == '{"shard": 0, "sha256": "ab"}\n'


def test_an_outdir_copied_as_hard_links_keeps_its_own_record_of_commits(tmp_path, ckpt, capsys):
    """A migration trial copied OUTDIR with `cp -al` (a snapshot tool's way): a redo in the copy
    appended to the commits record both share, and the original's audit then failed
    (altered_result) for results nobody had touched there."""
    import shutil

    arch = tmp_path / "arch"
    arch.mkdir()
    for i in range(2):
        Image.new("L", (24, 16), 60 + 40 * i).save(arch / f"{i}.png")
    man, out, copy = tmp_path / "m.parquet", tmp_path / "out", tmp_path / "copy"
    assert main(["scan", str(arch), "-o", str(man), "-q"]) == 0
    assert main(["run", "--manifest", str(man), "-o", str(out), "--checkpoint", ckpt, "--size", "32", "-q"]) == 0
    shutil.copytree(out, copy, copy_function=os.link)
    assert os.stat(out / "commits.jsonl").st_nlink == 2
    assert main(["run", "-o", str(copy), "--redo", str(arch / "0.png"), "-q"]) == 0
    assert os.stat(out / "commits.jsonl").st_nlink == 1  # the copy's record is its own now
    capsys.readouterr()
    assert main(["audit", str(out), "-q"]) == 0, capsys.readouterr()
    assert main(["audit", str(copy), "-q"]) == 0, capsys.readouterr()


def test_a_relative_manifest_moved_with_its_scans_is_found_again(tmp_path, ckpt, capsys, monkeypatch):
    import shutil

    arch = tmp_path / "arch"
    arch.mkdir()
    for i in range(2):
        Image.new("L", (24, 16), 60 + 40 * i).save(arch / f"{i}.png")
    out = tmp_path / "out"
    assert main(["scan", str(arch), "-o", str(arch / "m.parquet"), "--relative", "-q"]) == 0
    run = ["--checkpoint", ckpt, "--size", "32", "-q"]
    assert main(["run", "--manifest", str(arch / "m.parquet"), "-o", str(out), *run, "--format",
                 "tiff"]) == 0
    assert main(["audit", str(out), "-q"]) == 0
    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 0
    keys = list(json.loads(capsys.readouterr().out))
    shutil.move(arch, tmp_path / "arch2")  # the archive moves to a new disk
    # the audit that cannot check it says so in its report: a trial's monitor read the last one's "passed"
    assert main(["audit", str(out), "-q"]) == 2
    report = json.loads((out / "audit.json").read_text())
    assert (report["ok"], report["verdict"], report["previous"]["verdict"]) == (False, "not audited", "passed")
    assert report["refused"].startswith(f"manifest not found: {arch / 'm.parquet'}; if it was moved")
    assert "<b>not audited</b>: manifest not found" in (out / "audit.html").read_text()
    import pipeline.client.review

    served = []
    monkeypatch.setattr(pipeline.client.review, "serve", lambda *x, **k: served.append(x))
    assert main(["review", str(out), "--no-browser"]) == 0 and served  # the page opens, and says why
    assert f"note: the job's manifest {arch / 'm.parquet'} is not there (moved?)" in capsys.readouterr().err
    assert main(["audit", str(out), "-q"]) == 2  # refused again: the last verdict that checked it stays
    assert json.loads((out / "audit.json").read_text())["previous"]["verdict"] == "passed"
    (out / "audit.json").write_text('["not", "a report"]')  # one not ours in shape: refused all the same
    assert main(["audit", str(out), "-q"]) == 2
    assert json.loads((out / "audit.json").read_text())["previous"] == {"at": None, "verdict": None}
    assert main(["status", str(out)]) == 2
    said = capsys.readouterr()
    assert "manifest not found" in said.err and f"colorize run -o {out} --manifest NEW/PATH.parquet" in said.err
    # what is done stands without it: a monitor read "no_job" and no counts of a finished job (a trial)
    assert said.out == f"{out}: shards 1 committed; images 2 ok, 0 error, 0 skipped (how many are left: the manifest says)\n"
    assert main(["status", str(out), "--json"]) == 2
    got = json.loads(capsys.readouterr().out)
    assert (got["state"], got["committed"], got["ok"], got["pending"], got["images"]) == ("manifest_missing", 1, 2, None, None)
    assert got["manifest_missing"].startswith(f"manifest not found: {arch / 'm.parquet'}; if it was moved")
    assert list(got) == keys  # the same keys as the job's before
    assert got["manifest"] == str(arch / "m.parquet")  # which: a copied OUTDIR reads its owner's
    for argv in (["export", str(out), str(tmp_path / "e.csv")], ["run", "-o", str(out), "-q"]):
        assert main(argv) == 2  # the same advice, not a reader's errno
        err = capsys.readouterr().err
        assert f"manifest not found: {arch / 'm.parquet'}; if it was moved" in err, err
    assert main(["run", "--manifest", str(tmp_path / "e.csv"), "-o", str(tmp_path / "o2")]) == 2
    assert "make one first: colorize scan" in capsys.readouterr().err
    (tmp_path / "photo.parquet").write_bytes((tmp_path / "arch2" / "0.png").read_bytes())
    assert main(["run", "--manifest", str(tmp_path / "photo.parquet"), "-o", str(tmp_path / "o2")]) == 2
    assert "photo.parquet is not a manifest: not a Parquet file, or one cut short" in capsys.readouterr().err
    shard = next((out / "results").glob("shard-*.parquet"))  # a trial gave a results shard (pyarrow's words)
    assert main(["run", "--manifest", str(shard), "-o", str(tmp_path / "o2")]) == 2
    assert (f"{shard} is not a manifest: it has no 'path' column (a run's results, or their export: the "
            "manifest a run was made from is the one its OUTDIR/job.json names)") in capsys.readouterr().err
    # the advice as given: the job's own options (its format, its checkpoint) come from job.json
    assert main(["run", "-o", str(out), "--manifest", str(tmp_path / "arch2" / "m.parquet"), "-q"]) == 0
    assert f"the job's manifest is now {tmp_path / 'arch2' / 'm.parquet'}" in capsys.readouterr().out
    assert main(["status", str(out)]) == 0 and main(["audit", str(out), "-q"]) == 0
    (tmp_path / "arch2" / "1.png").rename(tmp_path / "1.png")  # gone a while, then back: said
    assert main(["scan", str(tmp_path / "arch2"), "-o", str(tmp_path / "arch2" / "m.parquet"), "-q"]) == 0
    (tmp_path / "1.png").rename(tmp_path / "arch2" / "1.png")
    capsys.readouterr()
    assert main(["scan", str(tmp_path / "arch2"), "-o", str(tmp_path / "arch2" / "m.parquet"), "-q"]) == 0
    # as the scan names a file gone: where it is, not as the manifest stores it (../arch2/1.png)
    assert f"found again: {tmp_path / 'arch2' / '1.png'} (no longer gone)" in capsys.readouterr().err
    # a folder that takes no file (/sys here; a read-only mount): the file asked for is named, not
    # the temporary one it is written under first
    capsys.readouterr()
    assert main(["export", str(out), "/sys/e.csv"]) == 2
    assert capsys.readouterr().err.strip().endswith(": /sys/e.csv")
    # a real manifest asked for a column it may lack is not called "not a manifest"
    from pipeline.client.manifest import read_manifest
    from pipeline.errors import ScanError

    with pytest.raises(ScanError, match="^cannot read manifest .*no_such_column"):
        read_manifest(tmp_path / "arch2" / "m.parquet", columns=["image_id", "no_such_column"])


def test_a_full_disk_while_writing_names_the_file_asked_for(tmp_path, monkeypatch):
    import errno

    from pipeline import storage

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")  # as fsync says it: no file named

    monkeypatch.setattr(storage.os, "fsync", full)
    with pytest.raises(OSError) as e:
        storage.write_atomic(tmp_path / "e.csv", b"x")
    assert (e.value.errno, e.value.filename) == (errno.ENOSPC, str(tmp_path / "e.csv"))
    assert list(tmp_path.iterdir()) == []  # its temporary file gone with it


def test_a_rescan_keeps_the_manifests_way_of_storing_paths(tmp_path, capsys):
    """A manifest made with --relative, rescanned without it, took the new scans' paths whole:
    moved with its scans to a new disk, it found the old and lost the new. One extended into
    another folder named none of its old files."""
    import os

    import pyarrow.parquet as pq

    arch = tmp_path / "arch"
    arch.mkdir()
    Image.new("L", (24, 16), 60).save(arch / "0.png")
    man = arch / "m.parquet"
    assert main(["scan", str(arch), "-o", str(man), "--relative", "-q"]) == 0
    Image.new("L", (24, 16), 90).save(arch / "1.png")
    assert main(["scan", str(arch), "-o", str(man), "-q"]) == 0
    assert pq.read_table(man).column("path").to_pylist() == ["0.png", "1.png"]
    capsys.readouterr()
    (tmp_path / "elsewhere").mkdir()
    assert main(["scan", str(arch), "--extend", str(man), "-o", str(tmp_path / "elsewhere" / "m.parquet")]) == 2
    err = capsys.readouterr().err
    assert f"{man} holds paths relative to its own folder ({arch})" in err and f"-o {man}" in err, err
    assert not (tmp_path / "elsewhere" / "m.parquet").exists()
    whole = tmp_path / "whole.parquet"
    assert main(["scan", str(arch), "-o", str(whole), "-q"]) == 0
    Image.new("L", (24, 16), 120).save(arch / "2.png")
    assert main(["scan", str(arch), "-o", str(whole), "-q", "--relative"]) == 0
    assert f"--relative not taken: {whole} stores its paths whole" in capsys.readouterr().err
    assert all(os.path.isabs(p) for p in pq.read_table(whole).column("path").to_pylist())


def test_a_run_without_workers_says_so_and_a_stalled_run_is_not_given_a_pace(tmp_path, ckpt, capsys):
    import os
    import time

    from pipeline.client.orchestrate import _Watch
    from pipeline.client.outdir import Outdir

    def watched(workers: dict, before: dict | None = None) -> list[str]:
        said = []

        class Cluster:
            first = before

            def scheduler_info(self):
                seen, Cluster.first = Cluster.first, None
                return {"workers": workers if seen is None else seen}

        w = _Watch(Cluster(), "tcp://10.0.0.1:8786", said.append, after=0.2, every=0.05)
        deadline = time.monotonic() + 20  # a busy machine runs the thread late
        while not said and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # once only
        w.stop()
        return said

    assert watched({}) == [  # every worker of the user's cluster gone
        "colorize: no dask worker connected to tcp://10.0.0.1:8786 for 0 s: the run waits for one "
        "(start one: dask worker tcp://10.0.0.1:8786), or Ctrl-C (committed shards stay)"]
    # one paused by dask (its memory at 80 % of its limit): connected, but it takes no shard
    assert watched({"tcp://10.0.0.2:4000": {"name": "node7", "status": "paused", "memory_limit": 1.25e9,
                                            "metrics": {"memory": 1.03e9}}}) == [
        "colorize: worker node7 has been paused by dask for 0 s: its memory (1.03 GB) is near its "
        "limit (1.25 GB), and it takes no shard until that falls; give it more (dask worker "
        "--memory-limit)"]
    one = {"tcp://10.0.0.3:4000": {"name": "node8", "status": "running"}}
    assert watched(one, before={**one, "tcp://10.0.0.2:4000": {"name": "node7", "status": "running"}}) == [
        "colorize: worker node7 left the cluster (1 worker now); a shard it held runs again elsewhere"]
    # a run holding OUTDIR whose last commit is long past the pace of the ones before
    man, out = small_archive(tmp_path, 4)
    assert main(["run", "--manifest", str(man), "-o", str(out), "--checkpoint", ckpt, "--size", "32", "-q"]) == 0
    (out / "results" / "shard-00003.parquet").unlink()
    now = time.time()
    for k in range(3):  # committed 10 s apart, the last 10 minutes ago
        os.utime(out / "results" / f"shard-{k:05d}.parquet", (now - 620 + 10 * k,) * 2)
    capsys.readouterr()
    with Outdir(str(out)).lock():  # a run resumed just now: those commits are not its pace
        assert main(["status", str(out)]) == 0
        line = capsys.readouterr().out.splitlines()[-1]
        assert "images/s" not in line and "no shard committed" not in line, line
        os.utime(out / ".lock", (now - 700,) * 2)  # the run began before them: they are its own
        assert main(["status", str(out)]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert "but no shard committed for 10 min (are its workers alive?" in line and "to go" not in line


def test_a_run_stopped_by_a_full_disk_still_records_why(tmp_path, monkeypatch):
    """The room reserved at a run's start is let go for the reason when the disk is full."""
    import errno

    from pipeline.client.outdir import RESERVE, STOPPED, Outdir, clear_stop, last_stop, record_stop
    from pipeline.storage import Store

    od = Outdir(str(tmp_path / "out"))
    od.store.makedirs()
    clear_stop(od)
    kept = (tmp_path / "out" / RESERVE).read_bytes()
    assert len(kept) >= 8192 and len(set(kept)) > 200  # room a compressing file system keeps too
    real = Store.write_atomic

    def full(self, rel, data):  # no room, but what the reserve gives back
        if rel == STOPPED and (self.exists(RESERVE) or len(data) > len(kept)):
            raise OSError(errno.ENOSPC, "No space left on device", rel)
        return real(self, rel, data)

    monkeypatch.setattr(Store, "write_atomic", full)
    record_stop(od, "OutputError: No space left on device")
    assert last_stop(od)["reason"] == "OutputError: No space left on device"
    assert not od.store.exists(RESERVE)


def test_a_nearly_full_disk_is_one_message_before_the_run(tmp_path, photo_gray, capsys, monkeypatch):
    """An empty probe file fits on a full disk: the room is asked too, before any worker starts
    (a trial's run began with 32 KiB free and failed at its first image)."""
    import collections
    import shutil

    import pipeline.storage as storage

    (tmp_path / "s").mkdir()
    Image.fromarray(photo_gray[:40, :40]).save(tmp_path / "s" / "a.png")
    assert main(["scan", str(tmp_path / "s"), "-o", str(tmp_path / "m.parquet"), "-q"]) == 0
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1 << 30, (1 << 30) - 32768, 32768))
    capsys.readouterr()
    assert main(["run", "--manifest", str(tmp_path / "m.parquet"), "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"no room for the outputs (32 KiB free, under {storage.MIN_FREE >> 20} MiB); free some space" in err, err
    assert "nothing was started" in err and not (tmp_path / "out" / "job.json").exists()


def test_outputs_mirror_the_tree_under_the_folder_scanned(tmp_path, capsys):
    """A box of one subfolder keeps it in the outputs' names, as next month's second will."""
    import pyarrow.parquet as pq

    fonds = tmp_path / "Fonds Müller"
    (fonds / "Kasten 1").mkdir(parents=True)
    Image.new("L", (20, 20), 9).save(fonds / "Kasten 1" / "a.png")
    man = tmp_path / "m.parquet"
    assert main(["scan", str(fonds), "-o", str(man), "-q"]) == 0
    (fonds / "Kasten 2").mkdir()
    Image.new("L", (20, 20), 9).save(fonds / "Kasten 2" / "a.png")
    assert main(["scan", str(fonds), "-o", str(man), "-q"]) == 0  # extended
    assert pq.read_table(man).column("out_stem").to_pylist() == ["Kasten 1/a", "Kasten 2/a"]


def test_a_broken_link_in_a_folder_reached_through_a_link_keeps_the_tree(tmp_path):
    import pyarrow.parquet as pq

    real = tmp_path / "real" / "box"
    real.mkdir(parents=True)
    Image.new("L", (20, 20), 9).save(real / "a.png")
    (real / "b.png").symlink_to(tmp_path / "nowhere.png")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    man = tmp_path / "m.parquet"
    assert main(["scan", str(tmp_path / "link" / "box"), "-o", str(man), "-q"]) == 0
    assert pq.read_table(man).column("out_stem").to_pylist() == ["a", "b"]


def test_links_in_the_archive_keep_its_tree_and_are_said(tmp_path, capsys):
    """A trial's archive held symbolic links: one to a file outside the folder scanned moved
    the job's root (out_stems gained 'archive/', the file was named after its target, and an
    OUTDIR beside the archive was refused as inside it); one to a file in the archive, and one
    to a folder, vanished unsaid. The first is named where the archive shows it; the others
    are said, and listed in --report."""
    import pyarrow.parquet as pq

    archive, elsewhere = tmp_path / "archive", tmp_path / "elsewhere"
    (archive / "box").mkdir(parents=True)
    elsewhere.mkdir()
    Image.new("L", (20, 20), 9).save(archive / "box" / "a.png")
    Image.new("L", (20, 20), 99).save(elsewhere / "outside.png")
    (archive / "box" / "lent.png").symlink_to(elsewhere / "outside.png")
    (archive / "box" / "0again.png").symlink_to("a.png")  # walked first
    (archive / "box" / "a.png.xmp").write_text("<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    (archive / "more").symlink_to(elsewhere)
    man, report = tmp_path / "m.parquet", tmp_path / "report.csv"
    capsys.readouterr()
    assert main(["scan", str(archive), "-o", str(man), "--report", str(report)]) == 0
    said = capsys.readouterr().err
    t = pq.read_table(man)
    assert t.column("out_stem").to_pylist() == ["box/a", "box/lent"]
    assert t.column("path").to_pylist() == [str(archive / "box" / "a.png"), str(archive / "box" / "lent.png")]
    assert "2 symbolic links not a row of their own" in said
    assert f"{archive / 'box' / '0again.png'}: a link to {archive / 'box' / 'a.png'}, which is in the job" in said
    assert f"{archive / 'more'}: a link to a folder ({elsewhere}): not followed" in said
    import csv

    with open(report, newline="", encoding="utf-8-sig") as f:
        lines = list(csv.DictReader(f))
    links = [x for x in lines if x["kind"] == "link"]
    # why in a column of its own (it was in the one named catalogue, which these have none of)
    assert len(links) == 2 and all(x["catalogue"] == "" and "a link to" in x["detail"] for x in links), links
    assert t.column("xmp_sidecar").to_pylist() == [str(archive / "box" / "a.png.xmp"), None]
    assert main(["run", "--manifest", str(man), "-o", str(tmp_path / "out"), "--dry-run"]) == 0


def test_names_that_differ_only_in_case_get_outputs_apart(tmp_path):
    """Photo.jpg and photo.tif (which a Linux disk holds side by side) would both write
    photo.png on a Mac's or an exFAT disk, one over the other: they keep their extensions, and
    next month's PHOTO.png, added by --extend, is numbered."""
    import pyarrow.parquet as pq

    box = tmp_path / "box"
    box.mkdir()
    Image.new("L", (20, 20), 9).save(box / "Photo.jpg")
    Image.new("L", (20, 20), 9).save(box / "photo.tif")
    man = tmp_path / "m.parquet"
    assert main(["scan", str(box), "-o", str(man), "-q"]) == 0
    assert pq.read_table(man).column("out_stem").to_pylist() == ["Photo.jpg", "photo.tif"]
    Image.new("L", (20, 20), 9).save(box / "PHOTO.png")
    assert main(["scan", str(box), "-o", str(man), "-q"]) == 0  # extended
    stems = pq.read_table(man).column("out_stem").to_pylist()
    assert len({s.casefold() for s in stems}) == 3 and stems[:2] == ["Photo.jpg", "photo.tif"]


def test_a_run_under_nohup_outlives_its_terminal(tmp_path, ckpt):
    """nohup (or a shell's `&`) sets SIGHUP to be ignored so that a run outlives its terminal:
    the run keeps it so, and finishes (it stops at SIGHUP only where SIGHUP was not ignored)."""
    import signal
    import subprocess
    import sys
    import time

    man, out = small_archive(tmp_path, 12)
    p = subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--manifest", str(man), "-o",
                          str(out), "-q", "--checkpoint", ckpt, "--size", "32", "--workers", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    t0 = time.monotonic()
    while not list(out.glob("results/*.parquet")) and time.monotonic() - t0 < 120:
        time.sleep(0.05)
    p.send_signal(signal.SIGHUP)  # the terminal closes
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert len(list(out.glob("results/*.parquet"))) == 12


def small_archive(tmp_path, n: int):
    """n tiny gray scans, scanned a shard each: (manifest, OUTDIR to be)."""
    src = tmp_path / "scans"
    src.mkdir()
    for i in range(n):
        Image.new("L", (24, 16), 10 * i).save(src / f"{i:02d}.png")
    man, out = tmp_path / "m.parquet", tmp_path / "out"
    assert main(["scan", str(src), "-o", str(man), "-q", "--shard-size", "1"]) == 0
    return man, out



def test_a_scheduler_that_cannot_be_reached_pins_nothing(tmp_path, ckpt, capsys, monkeypatch):
    """A scheduler restarting at night is a time to try again (exit 75, outcome unavailable),
    not a mistake; and as nothing ran, the job is not written: tomorrow's run may choose its
    options afresh."""
    import socket

    import dask
    import distributed  # noqa: F401 - its defaults loaded first: a dask.config.set made before
    # would take them away when it ends (distributed.comm gone: a later test's cluster failed)

    src = tmp_path / "scans"
    src.mkdir()
    Image.new("L", (24, 16), 40).save(src / "a.png")
    man, out = tmp_path / "m.parquet", tmp_path / "out"
    assert main(["scan", str(src), "-o", str(man), "-q"]) == 0
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        rc = main(["run", "--manifest", str(man), "-o", str(out), "--checkpoint", ckpt, "-q",
                   "--scheduler", f"tcp://127.0.0.1:{port}", "--summary-json", str(tmp_path / "s.json")])
    assert rc == 75
    assert f"cannot reach the dask scheduler at tcp://127.0.0.1:{port}" in capsys.readouterr().err
    assert json.loads((tmp_path / "s.json").read_text())["outcome"] == "unavailable"
    assert not out.exists()  # "nothing ran": no empty OUTDIR left behind either
    out.mkdir()  # the user's own folder stays, and what is in it
    (out / "notes.txt").write_text("mine")
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        assert main(["run", "--manifest", str(man), "-o", str(out / "deep" / "er"), "--checkpoint", ckpt,
                     "-q", "--scheduler", f"tcp://127.0.0.1:{port}"]) == 75
        assert main(["run", "--manifest", str(man), "-o", str(out), "--checkpoint", ckpt, "-q",
                     "--scheduler", f"tcp://127.0.0.1:{port}"]) == 2  # not an OUTDIR: refused
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        assert main(["run", "--manifest", str(man), "-o", str(empty), "--checkpoint", ckpt, "-q",
                     "--scheduler", f"tcp://127.0.0.1:{port}"]) == 75
    assert empty.is_dir() and not list(empty.iterdir())


@pytest.mark.parametrize("greeting, said", [
    (None, "something listens there but says nothing within 1 s (a dashboard's port?"),
    (b"SSH-2.0-OpenSSH_9.6\r\n", "something listens there but answers b'SSH-2.0-', not as a dask scheduler"),
])
def test_an_address_that_is_not_a_scheduler_is_one_line_not_a_hang(tmp_path, ckpt, capsys, monkeypatch,
                                                                   greeting, said):
    """A dashboard's port (8787 for 8786) hung a nightly run for ever (dask's client waits for
    the scheduler's greeting with no limit); an SSH banner became a traceback allocating 2.8 EiB."""
    import socket
    import threading

    from pipeline.client import cluster

    if greeting is None:  # a silent port is waited for; a banner ends the wait as it comes
        monkeypatch.setattr(cluster, "HELLO_WAIT", 1.0)
    src = tmp_path / "scans"
    src.mkdir()
    Image.new("L", (24, 16), 40).save(src / "a.png")
    man, out = tmp_path / "m.parquet", tmp_path / "out"
    assert main(["scan", str(src), "-o", str(man), "-q"]) == 0
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer():
        conn, _ = server.accept()
        if greeting:
            conn.sendall(greeting)
        threading.Event().wait(3)  # says nothing more, as an HTTP server waits for a request
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    with server:
        rc = main(["run", "--manifest", str(man), "-o", str(out), "--checkpoint", ckpt, "-q",
                   "--scheduler", f"tcp://127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert rc == 2 and said in err and "Traceback" not in err, err
    assert not out.exists()  # a trial found images/ and results/ left behind: nothing ran


def test_workers_too_small_for_the_model_or_the_largest_scan_are_said_before_any_shard(tmp_path):
    """A worker whose --memory-limit cannot hold the model is paused by dask at once (the run
    would wait for ever: refused when every worker is so); one that cannot also hold the largest
    scan would be killed on it and its shard fail. The arithmetic, on a manifest whose largest
    scan is 11000 x 11000 (its header, as the scan read it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.client.cluster import check_worker_memory
    from pipeline.errors import JobError

    man, _ = small_archive(tmp_path, 3)
    t = pq.read_table(man)
    big = [11000] + [24] * (t.num_rows - 1)
    t = t.set_column(t.column_names.index("width"), "width", pa.array(big, pa.int64()))
    t = t.set_column(t.column_names.index("height"), "height", pa.array(big, pa.int64()))
    pq.write_table(t, man)

    def check(*limits):
        said = []

        class Cluster:
            def scheduler_info(self):
                return {"workers": {f"tcp://10.0.0.{i}:1": {"name": f"n{i}", "memory_limit": m}
                                    for i, m in enumerate(limits)}}

        check_worker_memory(Cluster(), str(man), said.append)
        return said

    with pytest.raises(JobError, match=r"every worker is too small for the model: 2 workers \(n0, n1\) "
                                       r"have memory limits up to 1.25 GB"):
        check(1.25e9, 1.0e9)
    said = check(1.25e9, 8e9)
    assert len(said) == 1 and said[0].startswith("colorize: worker n0 has a memory limit of 1.25 GB: "
                                                 "with the model loaded (about 1.1 GB) dask pauses it at 80%")
    said = check(2e9, 0)  # 0: no limit
    assert said == [f"colorize: worker n0 may run out of memory on the largest scans ({t.column('path')[0]}, "
                    "11000x11000, and those held with it: about 2.8 GB with the model): dask would "
                    "restart it, the shard go one scan at a time (slower), and a scan too large "
                    "alone end as its error row; give it 3 GB or more (dask worker --memory-limit)"]
    assert check(8e9, 16e9) == []
    # masters all as large: a worker colours one per thread and holds a batch and those read
    # ahead decoded (the estimate said 2.8 GB where twelve 28.8-MP scans took 2.71 measured)
    from pipeline.client.cluster import largest_scan

    t = t.set_column(t.column_names.index("width"), "width", pa.array([6000] * t.num_rows, pa.int64()))
    t = t.set_column(t.column_names.index("height"), "height", pa.array([4800] * t.num_rows, pa.int64()))
    pq.write_table(t, man)
    px = 6000 * 4800
    assert largest_scan(str(man), threads=1)[3] == px * 14 + (t.num_rows - 1) * px * 3
    assert largest_scan(str(man), threads=2)[3] == 2 * px * 14 + (t.num_rows - 2) * px * 3
    from pipeline.client.jobspec import scans_held  # read ahead by count, masters by pixels

    assert scans_held(8, 2, 1_000_000) == 8 + 16 and scans_held(8, 2, 100_000_000) == 8 + 3
    assert scans_held(8, 4, 200_000_000) == 8 + 4  # every decoding thread busy still


def test_a_worker_of_another_version_is_refused_before_any_shard_and_refuses_a_shard():
    """An upgrade on a shared install under running workers: a worker still on the old version
    would write other bytes into the same job (a cluster operator saw half a job so)."""
    from pipeline.client.cluster import check_worker_versions
    from pipeline.client.state import OUTPUT_VERSION
    from pipeline.errors import JobError
    from pipeline.worker.shard import _same_version

    class Cluster:
        def run(self, fn):
            assert fn() == ("0.1.0", OUTPUT_VERSION)  # what it asks, run here: this package's
            return {"tcp://10.0.0.2:1": ("0.1.0", OUTPUT_VERSION - 1), "tcp://10.0.0.3:1": fn()}

        def scheduler_info(self):
            return {"workers": {"tcp://10.0.0.2:1": {"name": "old-node"}}}

    with pytest.raises(JobError, match=rf"^1 worker \(old-node\) run archive-colorizer 0.1.0 with output "
                                       rf"version {OUTPUT_VERSION - 1}, this machine 0.1.0 with {OUTPUT_VERSION}"):
        check_worker_versions(Cluster())
    _same_version(OUTPUT_VERSION)
    _same_version(None)  # a job object made before the field: nothing to compare
    with pytest.raises(RuntimeError, match=f"output version {OUTPUT_VERSION}, the job {OUTPUT_VERSION + 1}"):
        _same_version(OUTPUT_VERSION + 1)


def test_an_edited_job_json_is_found_by_audit_and_refused_by_a_run(tmp_path, ckpt, capsys, warm):
    """A preservation officer's check: job.json says which options made every byte; edited by
    hand (the format, the checkpoint's digest, its date), the next run adopted it and audit
    passed. Now both say so; and audit.json says when, by what and how it audited which job."""
    man, out = small_archive(tmp_path, 2)
    assert main(["run", "--manifest", str(man), "-o", str(out), "--checkpoint", ckpt, "--size", "32", "-q"]) == 0
    assert main(["audit", str(out), "-q"]) == 0
    report = json.loads((out / "audit.json").read_text())
    assert report["audited"]["by"].startswith("archive-colorizer ") and report["audited"]["quick"] is False
    assert report["job"]["format"] == "png" and report["job"]["manifest"] == str(man)
    job = json.loads((out / "job.json").read_text())
    for edit in ({"spec": {**job["spec"], "format": "jpeg"}}, {"started": "1999-01-01T00:00:00+00:00"}):
        (out / "job.json").write_text(json.dumps({**job, **edit}))
        capsys.readouterr()
        assert main(["audit", str(out), "-q"]) == 1
        kinds = [p["kind"] for p in json.loads((out / "audit.json").read_text())["problems"]]
        assert kinds == ["job_altered"]
        said = capsys.readouterr()
        # undone by hand or from the user's own backup: colorize keeps none (a trial looked)
        assert "undo the edit to job.json (from a backup of OUTDIR, where there is one: colorize keeps none)" \
            in said.out + said.err
        assert "--repair" not in said.out + said.err  # a run refuses the job: no repair before
        assert main(["run", "-o", str(out), "-q"]) == 2
        assert "job.json was edited: " in capsys.readouterr().err
        assert main(["status", str(out)]) == 0  # said there too: a trial's status said nothing
        assert f"{out}/job.json was edited since the run wrote it (" in capsys.readouterr().out
    (out / "job.json").write_text(json.dumps(job))  # put back: a job again
    assert main(["run", "-o", str(out), "-q"]) == 0 and main(["audit", str(out), "-q"]) == 0
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    said = capsys.readouterr()
    assert e.value.code == 0 and "colorize (archive-colorizer) 0." in said.out + said.err


def test_a_results_file_deleted_or_edited_after_its_commit_is_found(tmp_path, ckpt, capsys, warm):
    """A preservation officer's check: a results file deleted from a finished job read as an
    honest interruption, and a row forged in one (its output's digest updated to match) passed.
    The run records each commit (commits.jsonl: the file's sha256); audit checks against it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    man, out = small_archive(tmp_path, 3)
    assert main(["run", "--manifest", str(man), "-o", str(out), "--checkpoint", ckpt, "--size", "32", "-q"]) == 0
    lines = (out / "commits.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["shard"] for x in lines) == [0, 1, 2]
    shard1 = out / "results" / "shard-00001.parquet"
    t = pq.read_table(shard1)
    pq.write_table(t.set_column(t.schema.get_field_index("notes"), "notes",
                                pa.array(["checked, fine"], pa.string())), shard1)  # a row edited
    assert main(["audit", str(out), "-q", "--quick"]) == 0  # sizes only: not read
    assert main(["audit", str(out), "-q"]) == 1
    kinds = [p["kind"] for p in json.loads((out / "audit.json").read_text())["problems"]]
    assert kinds[0] == "altered_result"
    assert main(["run", "-o", str(out), "--repair", "-q"]) == 0
    assert main(["audit", str(out), "-q"]) == 0 and pq.read_table(shard1).column("notes")[0].as_py() is None
    assert list((out / "quarantine" / "results").glob("shard-00001*.parquet"))  # the evidence kept
    (out / "results" / "shard-00002.parquet").unlink()  # deleted from a finished job
    capsys.readouterr()
    assert main(["audit", str(out), "-q"]) == 1  # not 3, "interrupted"
    report = json.loads((out / "audit.json").read_text())
    kinds = [p["kind"] for p in report["problems"]]  # its outputs: its shard's, which a run rewrites
    assert kinds == ["missing_result"] and not report["incomplete"]
    capsys.readouterr()
    assert main(["status", str(out)]) == 3  # a trial's status called it an interruption
    said = capsys.readouterr().out
    assert said.startswith("1 results file committed before is gone (shard 2; deleted or moved since?)")
    assert "interrupted" not in said and f"`colorize run -o {out} --repair --scheduler {CLUSTER}` mends it" in said
    assert main(["status", str(out), "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["state"] == "damaged"
    assert main(["run", "-o", str(out), "-q"]) == 0  # a nightly run said nothing of it
    assert ("1 results file committed before is gone (shard 2; deleted or moved since?): its shard "
            "runs again") in capsys.readouterr().out
    assert main(["audit", str(out), "-q"]) == 0
    assert main(["status", str(out)]) == 0


def test_a_shard_committed_after_the_client_stopped_is_put_on_record(tmp_path, ckpt, capsys):
    """A trial's SIGINT to the client of a cluster that went on: its workers committed two more
    shards that no line of commits.jsonl records, so an edit to them was never told, even after
    the resume. Audit names them; the next run records them as they are, and an edit is told."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    man, out = small_archive(tmp_path, 3)
    assert main(["run", "--manifest", str(man), "-o", str(out), "--checkpoint", ckpt, "--size", "32", "-q"]) == 0
    ledger = out / "commits.jsonl"
    ledger.write_text("".join(x + "\n" for x in ledger.read_text().splitlines()
                              if json.loads(x)["shard"] != 1))  # committed by a worker, unseen
    capsys.readouterr()
    assert main(["audit", str(out), "-q"]) == 0
    said = capsys.readouterr().out
    assert "1 shard (1) was committed after the run's client had stopped" in said
    assert json.loads((out / "audit.json").read_text())["unrecorded_shards"] == [1]
    assert main(["run", "-o", str(out), "-q"]) == 0
    assert "recorded in commits.jsonl 1 shard (1) that the cluster's workers committed" in capsys.readouterr().out
    line = json.loads(ledger.read_text().splitlines()[-1])
    assert line["shard"] == 1 and line["seen"] == "after its run's client had stopped"
    assert main(["audit", str(out), "-q"]) == 0 and "after the run's client" not in capsys.readouterr().out
    shard1 = out / "results" / "shard-00001.parquet"
    t = pq.read_table(shard1)
    pq.write_table(t.set_column(t.schema.get_field_index("notes"), "notes",
                                pa.array(["checked, fine"], pa.string())), shard1)
    assert main(["audit", str(out), "-q"]) == 1
    assert [p["kind"] for p in json.loads((out / "audit.json").read_text())["problems"]] == ["altered_result"]


def test_a_reader_that_leaves_ends_the_command_silently(tmp_path, ckpt):
    """`colorize audit OUT | head -1` said 'colorize: error: Broken pipe' and exit 2, a user's
    mistake: the reader leaving ends it as it ends `cat` (silent, 141), where the write fails
    and where the last flush at exit would."""
    man, out = small_archive(tmp_path, 2)
    assert main(["run", "--manifest", str(man), "-o", str(out), "--checkpoint", ckpt, "--size", "32", "-q"]) == 0
    for cmd in (["audit", str(out), "-q"], ["status", str(out)]):
        r, w = os.pipe()
        os.close(r)  # the reader gone before the command has written a line
        p = subprocess.Popen([sys.executable, "-m", "pipeline", *cmd], stdout=w, stderr=subprocess.PIPE)
        os.close(w)
        err = p.stderr.read().decode()
        assert p.wait(timeout=120) == 141 and err == "", (cmd, err)


def test_ctrl_c_while_the_command_is_still_loading_is_one_line(monkeypatch, capsys):
    """Ctrl-C in a command's first tenths of a second lands while its modules import: one line
    and 130, as later, not a traceback (a trial pressed it at once)."""
    import importlib.abc

    import pipeline.__main__ as entry

    class Interrupted(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "pipeline.cli":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "pipeline.cli")
    monkeypatch.setattr(sys, "meta_path", [Interrupted(), *sys.meta_path])
    assert entry.main() == 130
    assert capsys.readouterr().err == "colorize: interrupted\n"


def test_a_name_with_a_newline_is_listed_for_redo_by_its_id(tmp_path, ckpt, warm):
    """An operator's trial: a damaged scan named 'broken<newline>name.jpg' became two lines of
    audit-errors.txt, and the redo the audit printed failed on both halves. A path a line
    cannot hold is listed by its image id; the advice is quoted as a shell reads it."""
    src = tmp_path / "scans x'y"
    src.mkdir()
    Image.new("L", (24, 16), 90).save(src / "good.png")
    (src / "broken\nname.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a whole JPEG")
    man, out = tmp_path / "m.parquet", tmp_path / "out dir 'ä"
    assert run_cli("scan", src, "-o", man, "-q").returncode == 0
    r = run_cli("run", "--manifest", man, "-o", out, "--size", "32", "--checkpoint", ckpt, "--workers", "1", "-q")
    assert r.returncode == 0, r.stderr
    r = run_cli("audit", out, "-q")
    (line,) = (out / "audit-errors.txt").read_text().splitlines()
    import pyarrow.parquet as pq

    broken = next(x for x in pq.read_table(out / "results").to_pylist() if x["status"] == "error")
    assert line == broken["image_id"]
    import shlex

    advice = next(ln for ln in r.stdout.splitlines() if "--redo" in ln)
    cmd = shlex.split(advice[advice.index("colorize run"):])  # pasted into a shell, as printed
    assert cmd[:6] == ["colorize", "run", "-o", str(out), "--redo", f"{out}/audit-errors.txt"]
    r = run_cli(*cmd[1:], "--dry-run")
    assert r.returncode == 0 and "would redo 1 image inside the job" in r.stdout, r.stderr


def test_an_audit_of_a_read_only_outdir_says_its_reasons_where_it_can(tmp_path, ckpt, capsys, monkeypatch, warm):
    """An operator's trial: on a read-only OUTDIR the audit said 'no report written', then
    pointed to audit.json, 'the report' and a --redo list it had not written."""
    from pipeline.storage import Store

    src = tmp_path / "scans"
    src.mkdir()
    Image.new("L", (24, 16), 90).save(src / "good.png")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a whole JPEG")
    man, out = tmp_path / "m.parquet", tmp_path / "out"
    assert main(["scan", str(src), "-o", str(man), "-q"]) == 0
    assert main(["run", "--manifest", str(man), "-o", str(out), "--size", "32", "--checkpoint", ckpt,
                 "--workers", "1", "-q"]) == 0
    Image.new("L", (24, 16), 90).save(src / "gone.png")  # one more, done, then its original gone
    assert main(["scan", str(src), "-o", str(man), "-q"]) == 0
    assert main(["run", "-o", str(out), "--workers", "1", "-q"]) == 0
    (src / "gone.png").unlink()
    assert main(["scan", str(src), "-o", str(man), "-q"]) == 0
    capsys.readouterr()

    def read_only(self, *a, **k):
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(Store, "write_atomic", read_only)
    assert main(["audit", str(out), "-q"]) == 0
    said = capsys.readouterr().out
    assert "no report written (Read-only file system" in said and "(reasons below)" in said
    assert f"1 image could not be colorized: '{src / 'broken.jpg'}' (" in said
    assert f"1 image whose original the last scan did not find (kept): '{src / 'gone.png'}'" in said
    assert "audit-errors.txt" not in said and "audit.html" not in said.replace("no report", "")
    assert "audit.json" not in said


def test_report_and_summary_json_replace_only_a_file_colorize_wrote(tmp_path, ckpt, capsys, warm):
    """A trial named the catalogue it had just read as --report, and a scan as --summary-json:
    both were overwritten without a word."""
    arch = tmp_path / "arch"
    arch.mkdir()
    Image.new("L", (24, 16), 60).save(arch / "camera.png")
    cat = arch / "c.csv"
    cat.write_text("path,Inv\ncamera.png,A-1\n", encoding="utf-8")
    man = tmp_path / "m.parquet"
    before = {p: p.read_bytes() for p in (cat, arch / "camera.png")}
    for target in before:
        assert main(["scan", str(cat), "-o", str(man), "-q", "--report", str(target)]) == 2
        assert f"--report {target}: that file is there and is not a scan's report" in capsys.readouterr().err
    run = ["run", "--manifest", str(man), "-o", str(tmp_path / "o"), "--checkpoint", ckpt, "--size", "32", "-q"]
    assert main(["scan", str(cat), "-o", str(man), "-q", "--report", str(tmp_path / "r.csv")]) == 0
    assert main([*run, "--summary-json", str(cat)]) == 2
    assert "--summary-json" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert {p: p.read_bytes() for p in before} == before
    # its own are replaced: a rerun's report and summary
    assert main(["scan", str(cat), "-o", str(man), "-q", "--report", str(tmp_path / "r.csv")]) == 0
    assert "1 file scanned before, 0 new" in capsys.readouterr().err
    for name in ("done.json", "s.json"):
        assert main([*run, "--summary-json", str(tmp_path / name)]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["outcome"] == "nothing_to_do"

    # one shape however the run ends: a refused run's summary has this run's keys too (null; a
    # README trial's busy one lacked the done one's worker memory and pace)
    assert main([*run, "--size", "64", "--summary-json", str(tmp_path / "refused.json")]) == 2
    assert main([*run, "--dry-run", "--summary-json", str(tmp_path / "dry.json")]) == 0  # a trial's had two keys more
    refused, done, again, dry = (json.loads((tmp_path / n).read_text())
                                 for n in ("refused.json", "done.json", "s.json", "dry.json"))
    assert [refused["outcome"], done["outcome"], dry["outcome"]] == ["refused", "done", "dry_run"]
    assert sorted(refused) == sorted(done) == sorted(again) == sorted(dry), set(done) ^ set(dry)
    assert refused["ok"] is None and refused["reason"] and done["job"]["ok"] == 1
    # a folder that cannot take it (/proc here; a read-only mount): said before the run, not after
    assert main([*run[:4], str(tmp_path / "o3"), *run[5:], "--summary-json", "/proc/s.json"]) == 2
    assert "cannot be written there" in capsys.readouterr().err and not (tmp_path / "o3").exists()
    (tmp_path / "empty.json").write_bytes(b"")  # a script's mktemp: nothing in it to lose
    assert main([*run, "--summary-json", str(tmp_path / "empty.json")]) == 0
    assert json.loads((tmp_path / "empty.json").read_text())["outcome"] == "nothing_to_do"


CTRL_C_WHILE_STARTING = """
import multiprocessing as mp, os, signal, threading, time
from pipeline.client.cluster import _workers_ignore_ctrl_c

got = []
signal.signal(signal.SIGINT, lambda *a: got.append("ctrl-c"))

def child(q):
    q.put({k: int(v, 16) for k, v in (ln.split(":") for ln in open("/proc/self/status") if ln.startswith(("SigBlk", "SigIgn")))})

def spawn(q):  # as dask's event loop does: a worker spawned from a thread of its own
    p = mp.get_context("spawn").Process(target=child, args=(q,))
    p.start()
    p.join()

if __name__ == "__main__":
    q = mp.get_context("spawn").Queue()
    with _workers_ignore_ctrl_c():
        t = threading.Thread(target=spawn, args=(q,))
        t.start()
        t.join()
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the workers start
        time.sleep(0.2)
    time.sleep(0.2)
    sig = q.get(timeout=30)
    print(got, bool((sig["SigBlk"] | sig["SigIgn"]) & 2))
"""


def test_ctrl_c_while_the_workers_start_is_not_lost_and_the_workers_leave_it_to_the_client(tmp_path):
    """A trial's Ctrl-C in a run's first second was dropped (SIGINT was ignored while the local
    workers started, so that they would inherit "ignore"), and the run went on to the end."""
    (tmp_path / "t.py").write_text(CTRL_C_WHILE_STARTING)
    r = subprocess.run([sys.executable, str(tmp_path / "t.py")], capture_output=True, text=True,
                       timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["['ctrl-c']", "True"], r.stdout


def test_an_audit_list_the_curator_edited_is_kept_as_edited(tmp_path, ckpt, capsys, warm):
    """The README says to keep the toned prints' lines in audit-skipped.txt and --redo it; a
    trial did, and the next audit overwrote the edit without a word."""
    arch = tmp_path / "arch"
    arch.mkdir()
    rng = np.random.default_rng(2)
    for i in range(2):  # colour photographs: skipped as colour
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(arch / f"c{i}.png")
    Image.new("L", (32, 24), 90).save(arch / "g.png")
    man, out = tmp_path / "m.parquet", tmp_path / "out"
    assert main(["scan", str(arch), "-o", str(man), "-q"]) == 0
    assert main(["run", "--manifest", str(man), "-o", str(out), "--checkpoint", ckpt, "--size", "32", "-q"]) == 0
    assert main(["audit", str(out), "-q"]) == 0
    listed = out / "audit-skipped.txt"
    assert sorted(listed.read_text().splitlines()) == [str(arch / "c0.png"), str(arch / "c1.png")]
    listed.write_text(f"{arch / 'c1.png'}\n")  # the toned print among them, kept
    capsys.readouterr()
    assert main(["audit", str(out), "-q"]) == 0
    said = capsys.readouterr().out
    assert f"{listed} was edited since the audit wrote it: kept as edited (this audit's list would hold 2 lines" in said
    assert listed.read_text() == f"{arch / 'c1.png'}\n"
    assert main(["audit", str(out), "-q"]) == 0 and listed.read_text() == f"{arch / 'c1.png'}\n"
    assert json.loads((out / "audit.json").read_text())["lists_kept"] == [{"list": "audit-skipped.txt", "would_hold": 2}]
    listed.unlink()  # asked for again
    assert main(["audit", str(out), "-q"]) == 0 and len(listed.read_text().splitlines()) == 2
    # an audit of an earlier version recorded no list: one edited since is kept all the same
    report = json.loads((out / "audit.json").read_text())
    (out / "audit.json").write_text(json.dumps({k: v for k, v in report.items() if k != "lists"}))
    listed.write_text(f"{arch / 'c0.png'}\n")
    capsys.readouterr()
    assert main(["audit", str(out), "-q"]) == 0 and listed.read_text() == f"{arch / 'c0.png'}\n"
    assert "audit-skipped.txt was edited since the audit wrote it: kept as edited" in capsys.readouterr().out
    (out / "audit.json").write_text(json.dumps({k: v for k, v in report.items() if k != "lists"}))
    listed.unlink()
    assert main(["audit", str(out), "-q"]) == 0 and len(listed.read_text().splitlines()) == 2
    (out / "audit.json").write_text(json.dumps({k: v for k, v in report.items() if k != "lists"}))
    assert main(["audit", str(out), "-q"]) == 0  # as this audit writes it: not the curator's
    assert "was edited" not in capsys.readouterr().out


def test_a_jobs_manifest_made_anew_is_kept_beside_and_the_way_back_is_said(tmp_path, ckpt, capsys):
    """A trial's `scan --fresh --shard-size 1` over a job's manifest: the run blamed moved
    sources and sent it to --extend the manifest --fresh had just overwritten; status said
    'the manifest grew ... resume with' the command the run refused."""
    import shutil

    arch = tmp_path / "arch"
    arch.mkdir()
    for i in range(3):
        Image.new("L", (24, 16), 40 + 40 * i).save(arch / f"{i}.png")
    man, out = arch / "m.parquet", tmp_path / "out"
    assert main(["scan", str(arch), "-o", str(man), "-q", "--shard-size", "2"]) == 0
    assert main(["run", "--manifest", str(man), "-o", str(out), "--checkpoint", ckpt, "--size", "32", "-q"]) == 0
    was = man.read_bytes()
    capsys.readouterr()
    assert main(["scan", str(tmp_path / "nowhere"), "-o", str(man), "-q", "--fresh"]) == 2
    assert not list(arch.glob("*before-fresh*")) and man.read_bytes() == was  # it failed: nothing kept
    assert main(["scan", str(arch), "-o", str(man), "-q", "--fresh", "--shard-size", "1"]) == 0
    kept = sorted(arch.glob("m.before-fresh-*.parquet"))
    assert len(kept) == 1 and kept[0].read_bytes() == was
    assert f"--fresh: the manifest it replaced is kept as {kept[0]}" in capsys.readouterr().err
    import os
    import time

    os.utime(man, (time.time() + 5, time.time() + 5))  # made anew once more, a moment later
    assert main(["scan", str(arch), "-o", str(man), "-q", "--fresh", "--shard-size", "1"]) == 0
    assert len(list(arch.glob("m.before-fresh-*.parquet"))) == 2  # the newest is not the job's
    assert main(["run", "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"its manifest {man} was made anew since the job ran (scan --fresh" in err, err
    assert f"the one the job ran on was kept as {kept[0]}: put it back (mv {kept[0]} {man})" in err, err
    assert "--extend" not in err
    assert main(["status", str(out)]) == 2  # as run and audit: a run refuses it (it said 0, a trial)
    said = capsys.readouterr().out
    assert "was made anew since the job ran" in said and "resume with" not in said, said
    assert main(["status", str(out), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["state"] == "manifest_changed"
    shutil.move(kept[0], man)  # as said: the job goes on
    assert main(["run", "-o", str(out), "-q"]) == 0 and main(["status", str(out)]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_a_manifest_made_anew_with_fewer_shards_is_said_by_status_and_audit_not_as_damage(tmp_path, ckpt, capsys, warm):
    """A README trial: rescanned with --fresh into fewer shards, status --json said "damaged"
    (exit 3) and its text counted the new manifest's shards and advised --repair; audit failed
    with extra results and stray outputs and advised --repair and --redo, all refused by run."""
    man, out = small_archive(tmp_path, 4)
    assert main(["run", "--manifest", str(man), "-o", str(out), "--checkpoint", ckpt, "--size", "32", "-q"]) == 0
    assert main(["scan", str(tmp_path / "scans"), "-o", str(man), "-q", "--fresh", "--shard-size", "3"]) == 0
    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 2
    s = json.loads(capsys.readouterr().out)
    assert (s["state"], s["manifest_changed"]) == ("manifest_changed", [0, 1, 2, 3])  # shard numbers, as damaged's
    assert main(["status", str(out)]) == 2
    said = capsys.readouterr()
    assert "was made anew since the job ran" in said.out and "--repair" not in said.out + said.err, said
    assert "shards (0, 1, 2, 3) hold other images" in said.out, said.out
    assert main(["audit", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("colorize: error: audit cannot check the job: ") and "was made anew" in err, err
    assert "--repair" not in err and err.count("\n") == 1, err
    kept = next(tmp_path.glob("m.before-fresh-*.parquet"))
    kept.replace(man)  # put back, as said: the audit checks the job again
    assert main(["audit", str(out), "-q"]) == 0


def test_a_scan_that_reads_nothing_names_the_file_and_a_list_of_paths_is_said_as_one(tmp_path, capsys):
    """A README trial: "none of the 1 files could be read, e.g. not an image" named no file, and
    a list of paths was "2 rows, 0 columns"."""
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "x.jpg").write_bytes(b"junk")
    assert main(["scan", str(tmp_path / "e"), "-o", str(tmp_path / "m.parquet"), "-q"]) == 1
    err = capsys.readouterr().err
    assert f"its one file could not be read: {tmp_path / 'e' / 'x.jpg'}: not an image" in err, err
    for n in "ab":
        Image.new("L", (8, 8)).save(tmp_path / f"{n}.png")
    (tmp_path / "list.txt").write_text("a.png\nb.png\n")
    assert main(["scan", str(tmp_path / "list.txt"), "-o", str(tmp_path / "l.parquet"), "-q"]) == 0
    assert f"{tmp_path / 'list.txt'}: a list of 2 paths\n" in capsys.readouterr().err


def test_a_run_whose_log_cannot_be_written_goes_on(tmp_path, ckpt):
    """Under cron with /var/log full, a trial's run stopped at its first line, colorized nothing
    and exited 2 ('No space left on device', as if OUTDIR were full); with its reader gone
    (`| head -1`) the summary said 'failed'."""
    man, out = small_archive(tmp_path, 2)
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "pipeline", "run", "--manifest", str(man), "-o", str(out),
                            "--checkpoint", ckpt, "--size", "32", "--summary-json", str(tmp_path / "s.json")],
                           stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "s.json").read_text())["outcome"] == "done"
    assert main(["status", str(out)]) == 0 and main(["audit", str(out), "-q"]) == 0


def test_more_local_workers_than_cores_is_said(tmp_path, ckpt, capsys, monkeypatch):
    """A trial's --workers 4 on two cores started four model-loaded processes without a word."""
    import os

    man, out = small_archive(tmp_path, 2)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert main(["run", "--manifest", str(man), "-o", str(out), "--checkpoint", ckpt, "--size", "32",
                 "-q", "--workers", "2"]) == 0
    assert "--workers 2 on 1 core: more processes than cores" in capsys.readouterr().out


def test_status_of_a_first_run_still_starting_is_not_no_job(tmp_path, capsys):
    """A trial's status said 'no_job' (exit 2) while a first run held OUTDIR, waiting for a GPU
    worker to join: a monitor took it for no run at all."""
    from pipeline.client.outdir import Outdir

    out = tmp_path / "out"
    out.mkdir()
    with Outdir(out).lock():
        assert main(["status", str(out), "--json"]) == 0
        said = json.loads(capsys.readouterr().out)
        assert said["state"] == "starting" and said["running"]
    assert main(["status", str(out), "--json"]) == 2  # let go: no job there, as before
    assert json.loads(capsys.readouterr().out)["state"] == "no_job"


def test_a_dry_run_on_a_cluster_asks_the_cluster_what_a_real_run_would(tmp_path, ckpt, capsys):
    """A dry run before the night said all was well with a misspelt --scheduler, and with
    workers too small for the model: the run that followed was refused at once (75, 2)."""
    import socket

    from distributed import LocalCluster

    src = tmp_path / "scans"
    src.mkdir()
    for i in range(3):
        Image.new("L", (24, 16), 40 * i).save(src / f"{i}.png")
    man, out = tmp_path / "m.parquet", tmp_path / "night" / "out"
    assert main(["scan", str(src), "-o", str(man), "-q"]) == 0
    capsys.readouterr()
    dry = ["run", "--manifest", str(man), "-o", str(out), "--checkpoint", ckpt, "--dry-run", "--scheduler"]
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        nobody = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    assert main([*dry, nobody]) == 75
    err = capsys.readouterr().err  # the hint of a job whose one-off cluster is gone: said how to go on
    assert f"cannot reach the dask scheduler at {nobody}" in err and "leave --scheduler out" in err
    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0", memory_limit="4GB",
                      protocol="tcp") as c:
        from pipeline.worker import shard  # the workers run here: another run's net they hold

        shard._COLORIZERS["another run's"] = object()
        try:
            assert main([*dry, c.scheduler_address]) == 0
            assert "another run's" in shard._COLORIZERS  # a dry run loaded none, frees none
        finally:
            shard._COLORIZERS.pop("another run's", None)
        said = capsys.readouterr().out
        assert "1 pending (3 of 3 images)" in said and f"the dask scheduler at {c.scheduler_address} answers, with 1 worker" in said
        assert main([*dry, c.scheduler_address, "--device", "cuda"]) == 0
        assert "(0 with the GPU resource)" in (said := capsys.readouterr().out)
        assert "none offers the GPU resource now: a real run waits" in said
    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0", memory_limit="300MB") as c:
        assert main([*dry, c.scheduler_address]) == 2
        assert "every worker is too small for the model" in capsys.readouterr().err
    assert not out.parent.exists()  # a dry run makes nothing


def test_a_job_an_older_colorize_began_is_said_so_not_given_a_resume_that_is_refused(tmp_path, ckpt, capsys, warm):
    """An upgrade trial: a job begun by a release of an older output version, interrupted, then
    status and audit said "resume with: colorize run -o OUT", which this version refused as "a
    different job", and the README said a plain rerun is enough; nothing said which install
    writes which output version."""
    from pipeline.client.state import OUTPUT_VERSION, fingerprint, job_seal

    man, out = small_archive(tmp_path, 3)
    run = ["run", "--manifest", str(man), "-o", str(out), "--checkpoint", ckpt, "--size", "32", "-q"]
    assert main(run) == 0
    job = json.loads((out / "job.json").read_text())  # as that release wrote it
    job["spec"]["output_version"] = OUTPUT_VERSION - 1
    job["fingerprint"] = fingerprint(job["spec"])
    job["seal"] = job_seal(job)
    (out / "job.json").write_text(json.dumps(job))
    kept = {p: p.read_bytes() for p in (out / "results" / "shard-00002.parquet", out / "commits.jsonl")}
    (out / "results" / "shard-00002.parquet").unlink()  # interrupted before its last shard
    ledger = out / "commits.jsonl"
    ledger.write_text("".join(x for x in ledger.read_text().splitlines(True) if '"shard": 2,' not in x))
    capsys.readouterr()
    other = (f"this job was begun by an older colorize (output version {OUTPUT_VERSION - 1}; this one "
             f"writes output version {OUTPUT_VERSION}, other bytes), which alone goes on with it")
    assert main(["status", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"2 of 3 shards committed; {other}" in said and "resume with" not in said, said
    assert f"colour it anew with this one: colorize run -o {out} --restart" in said
    assert main(["status", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "other_version"
    assert main(["audit", str(out), "-q"]) == 3
    said = capsys.readouterr().out
    assert other in said and "resume with" not in said, said
    assert main(["run", "-o", str(out), "-q"]) == 2
    assert f"{out} holds a job this colorize cannot continue: {other}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--version"])
    assert f"output version {OUTPUT_VERSION}" in capsys.readouterr().out
    for p, data in kept.items():  # finished by the release that began it: no advice to start over
        p.write_bytes(data)
    assert main(["status", str(out)]) == 0
    said = capsys.readouterr().out
    assert "a redo or a --hinted run in it needs that colorize" in said and "--restart" not in said, said
    assert main(["status", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "complete"
    assert main(["audit", str(out), "-q"]) == 0
    said = capsys.readouterr().out
    assert "a redo or a --hinted run in it needs that colorize" in said and "--restart" not in said, said
    (out / "images" / sorted(p.name for p in (out / "images").iterdir())[0]).write_bytes(b"altered")
    assert main(["audit", str(out), "-q"]) == 1  # a failed audit's advice is refused here too: said
    assert "note: this job was begun by an older colorize" in capsys.readouterr().err


def test_a_job_whose_install_is_gone_finds_the_same_weights(tmp_path, ckpt, capsys, warm):
    """An upgrade trial: a job remembers its checkpoint by path, the shipped weights of the
    install that began it; that folder removed (a new checkout), every run said "checkpoint not
    found" with no advice, and a --checkpoint given was forgotten by the next run."""
    import shutil

    from pipeline.client.state import DEFAULT_CHECKPOINT

    man, out = small_archive(tmp_path, 2)
    old = tmp_path / "old install" / "pipeline" / "weights"
    old.mkdir(parents=True)
    shutil.copy(DEFAULT_CHECKPOINT, old / "colorizer.pt")  # that install's shipped weights
    assert main(["run", "--manifest", str(man), "-o", str(out), "--checkpoint", str(old / "colorizer.pt"),
                 "--size", "32", "-q"]) == 0
    shutil.rmtree(tmp_path / "old install")
    (out / "results" / "shard-00001.parquet").unlink()
    ledger = out / "commits.jsonl"
    ledger.write_text("".join(x for x in ledger.read_text().splitlines(True) if '"shard": 1,' not in x))
    capsys.readouterr()
    assert main(["run", "-o", str(out), "-q"]) == 0  # these shipped weights: the same file
    said = capsys.readouterr()
    assert f"the job's checkpoint is now {DEFAULT_CHECKPOINT} (was {old / 'colorizer.pt'}; the same weights)" in said.out
    assert json.loads((out / "job.json").read_text())["spec"]["checkpoint"] == str(DEFAULT_CHECKPOINT)
    # weights of one's own, moved: said how to go on, and once given, kept
    man2, out2 = tmp_path / "m.parquet", tmp_path / "out2"
    mine = tmp_path / "mine.pt"
    shutil.copy(ckpt, mine)
    assert main(["run", "--manifest", str(man2), "-o", str(out2), "--checkpoint", str(mine), "--size", "32", "-q"]) == 0
    mine.rename(tmp_path / "moved.pt")
    capsys.readouterr()
    assert main(["run", "-o", str(out2), "--dry-run"]) == 2
    assert (f"the job's checkpoint {mine} is not there (moved, or its install removed; sha256 "
            in (err := capsys.readouterr().err) and "give the same weights with --checkpoint PATH" in err), err
    assert main(["run", "-o", str(out2), "-q", "--checkpoint", str(tmp_path / "moved.pt")]) == 0
    assert main(["run", "-o", str(out2), "--dry-run"]) == 0
    (tmp_path / "moved.pt").unlink()  # gone for good: a restart is a new job, on the shipped weights
    capsys.readouterr()
    assert main(["run", "-o", str(out2), "-q", "--restart"]) == 0
    assert (f"the job's checkpoint {tmp_path / 'moved.pt'} is gone: --restart colours with the shipped "
            "weights") in capsys.readouterr().err
    assert json.loads((out2 / "job.json").read_text())["spec"]["checkpoint"] == str(DEFAULT_CHECKPOINT)
