"""The `colorize` command line: thin argparse wrappers over the library's functions."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import re
import shlex
import signal
import sys
import time
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


from pipeline.client.catalogue import DELIMITER_NAMES, delimiter_arg
from pipeline.client.jobspec import (
    add_flags,
    count_arg,
    positive_int,
    size_arg,
    unit_arg,
    whole_number,
)
from pipeline.errors import Busy, CheckpointError, Unavailable, UsageError, plural
from pipeline.model.trainspec import TrainConfig


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        if message.startswith("unrecognized arguments:"):
            top = [o for a in self._actions for o in a.option_strings]
            cmd = getattr(self, "command", None)  # the subcommand being parsed (set by main)
            own = [o for sp in (self._subparsers._group_actions if self._subparsers else ())
                   if cmd in sp.choices for a in sp.choices[cmd]._actions for o in a.option_strings]
            known, argv = top + own, getattr(self, "argv", [])
            after = argv[argv.index("--") + 1:] if "--" in argv else []  # all names there
            hints = []
            for tok in message.split(":", 1)[1].split():
                close = difflib.get_close_matches(tok.split("=")[0].replace("_", "-"), known, n=1)
                if tok.split("=")[0] in own and tok in after:
                    hints.append(f"{tok}: options go before `--`")
                elif tok.split("=")[0] in top and tok.split("=")[0] not in own:  # `image a b --version`
                    hints.append(f"{tok}: an option of colorize itself, not of {cmd}: `colorize {tok}`")
                elif tok.startswith("-") and close:
                    hints.append(f"{tok}: did you mean {close[0]}?")
                elif tok.endswith(".parquet") and "--manifest" in known:  # `run m.parquet -o OUT`
                    hints.append(f"a manifest is named with --manifest {tok}")
            if hints:
                message += " (" + "; ".join(hints) + ")"
        elif m := re.match(r"argument (\S+?)(/\S+)?: expected one argument$", message):
            argv = getattr(self, "argv", [])  # `--hint -1,2,#ff0000`: argparse took the value for an option
            nxt = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in (m[1], *(m[2] or "/")[1:].split("/"))]
            if nxt and re.match(r"-[\d.]", nxt[0]):
                message += f" (a value that begins with '-' is joined to it by '=': {m[1]}={nxt[0]})"
        prog, cmd = self.prog, getattr(self, "command", None)
        if message.startswith("argument COMMAND: invalid choice:"):  # `colorize staus`
            word = message.split("'")[1] if "'" in message else ""
            close = difflib.get_close_matches(word, self._subparsers._group_actions[0].choices, n=1)
            message = f"no command {word!r}" + (f": did you mean {close[0]}?" if close else "")
        elif cmd and " " not in prog:  # the subcommand's own help says what it takes
            prog = f"{prog} {cmd}"
        raise UsageError(f"{message} (see `{prog} --help`)")



# A terminal's control characters (escape sequences, carriage return, bidi overrides) in a cell or
# a file name a message quotes: written as escapes, so a donor's catalogue cannot retitle the
# window, erase a line of the scan's summary or reverse the text after it.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def plain(text: str) -> str:
    return _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode(), text)

def port_arg(s: str) -> int:
    v = whole_number(s)
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 to 65535, got {v}")
    return v


def page_size_arg(s: str) -> int:
    v = whole_number(s)
    if not 1 <= v <= 1000:  # each card's two pictures are asked for as the page is drawn
        raise argparse.ArgumentTypeError(f"must be 1 to 1000, got {v}")
    return v


def load_toml(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"job spec not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"bad TOML in {path}: {e}") from None
    except UnicodeDecodeError as e:  # Notepad's "Unicode" (UTF-16), or a Windows-1252 path
        raise UsageError(f"{path} is not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r}); "
                         "save it as UTF-8") from None
    except IsADirectoryError:
        raise UsageError(f"job spec {path} is a folder") from None


PATH_KEYS = {"manifest", "output", "checkpoint", "src", "out", "init", "summary_json"}


def apply_job_spec(parser: argparse.ArgumentParser, spec: dict, path: str) -> None:
    """TOML keys are the long flags (dashes or underscores); unknown keys are mistakes.
    Relative paths in a spec are relative to the spec's own folder, wherever it is run from."""
    actions = {a.dest: a for a in parser._actions}
    base = Path(path).parent
    defaults = {}
    for k, v in spec.items():
        dest = k.replace("-", "_")
        if dest not in actions:
            close = difflib.get_close_matches(dest, [d for d in actions if d != "help"], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"{path}: unknown key {k!r}{hint}")
        if dest in PATH_KEYS and isinstance(v, str) and v and "://" not in v:
            v = os.path.abspath(base / v) if not os.path.isabs(v) else v
        defaults[dest] = _checked(actions[dest], k, v, path)
    parser.set_defaults(**defaults)


def _outdir_whole(a: argparse.Namespace) -> None:
    """A run's OUTDIR named whole in all that is said of it: a `resume with` line read in a
    cron log, whose folder is not the reader's, named a folder relative to one nobody knew."""
    key = "output" if a.command == "run" else "outdir"
    v = getattr(a, key, None)
    if isinstance(v, str) and v and "://" not in v and not os.path.isabs(v):
        # joined, not normalised: "link/../out" is where the system finds it, through the link
        setattr(a, key, os.path.join(os.getcwd(), v))


def _checked(action: argparse.Action, key: str, v, path: str):
    """What argparse checks on the command line, checked for a spec's value too (defaults
    bypass it): a `format = "gif"` must stop here, not become an error row per image."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(v, bool):
            raise UsageError(f"{path}: {key} must be true or false, not {v!r}")
        return v
    if action.type is not None and not isinstance(v, (list, dict, bool)):
        try:
            v = action.type(v if isinstance(v, str) else str(v))
        except (argparse.ArgumentTypeError, ValueError, TypeError) as e:
            raise UsageError(f"{path}: {key}: {e}") from None
    if action.choices is not None and v not in action.choices:
        raise UsageError(f"{path}: {key} = {v!r}; choose from {', '.join(map(str, action.choices))}")
    return v


# --- image -------------------------------------------------------------------------------------


def cmd_image(a) -> int:
    """One file through the worker's own stages (the reader, the colorizer, the writer)."""
    import dataclasses

    from pipeline.client.jobspec import JobSpec
    from pipeline.client.state import job_date
    from pipeline.storage import write_atomic
    from pipeline.worker import hints
    from pipeline.worker.stages import ImageStages
    from pipeline.worker.writers import by_extension

    if not a.input or not a.output:
        raise UsageError("`image` needs an input file and an output file, got an empty name")
    if Path(a.input).is_dir():
        raise UsageError(f"{a.input} is a folder; `image` colorizes one file (for a folder: "
                         "colorize scan, then colorize run)")
    if not Path(a.input).is_file():
        from pipeline.storage import not_a_file

        raise UsageError(f"input {a.input} is {why}" if (why := not_a_file(a.input)) else
                         f"input not found: {a.input}")
    if Path(a.output).resolve() == Path(a.input).resolve():
        raise UsageError(f"output {a.output} is the input: the original would be replaced; "
                         "name another file")
    fmt = by_extension(a.output)
    if fmt is None and (Path(a.output).is_dir() or a.output.endswith(("/", os.sep))):
        raise UsageError(f"{a.output} is a folder; OUT names the file to write, e.g. "
                         f"{Path(a.output) / (Path(a.input).stem + '.png')}")
    if fmt is None:
        raise UsageError("output must end in .png, .jpg, .tif or .webp (or .jpeg, .tiff), "
                         f"got {a.output!r}")
    if Path(a.output).is_dir():
        raise UsageError(f"{a.output} is a folder; OUT names the file to write")
    if Path(a.output).exists() and not a.force and not _ours(a.output):
        raise UsageError(f"{a.output} exists and colorize did not write it (a scan?); name another "
                         "file, or add --force to replace it")
    if (job := _in_outdir(a.output)) and not a.force:
        raise UsageError(f"{a.output} is inside the job in {job}, whose audit checks each output: "
                         f"to colour it again, colorize run -o {shlex.quote(job)} --redo ...; or --force")
    given = _hints_arg(a) if a.hint or a.hints else None
    spec = JobSpec(size=a.size, device=a.device, format=fmt.name, max_pixels=a.max_pixels,
                   recolor=a.recolor, metadata_columns="none")
    # Read and checked before the net loads (seconds): a mistake is told at once.
    stages = ImageStages(spec, outdir="", checkpoint_sha256="", created=job_date())
    item = stages.read_one(a.input, {"hints": given} if given else None)
    if item.finished:
        raise UsageError(f"{a.input}: {item.row['error']}")
    d = item.decoded
    outside = hints.outside(hints.from_json(given), d.width, d.height) if given else []
    if outside:
        raise UsageError(f"{plural(len(outside), 'hint')} outside the {d.width}x{d.height} image "
                         f"(at {', '.join(outside[:3])}): X,Y are "
                         "the source's pixels, from its top left corner; nothing written")
    from pipeline.worker.engine import Colorizer  # torch: only once there is work for it

    net = Colorizer(a.checkpoint, device=a.device, size=a.size)
    data = dataclasses.replace(stages, checkpoint_sha256=net.sha256).colour_one(net, item)
    write_atomic(a.output, data)
    said = f", {plural(item.row['hints'], 'hint')}" if item.row.get("hints") else ""
    bits = d.bits if fmt.bits16 else 8  # a 16-bit scan as a JPEG is 8 bits
    print(f"wrote {a.output} ({d.width}x{d.height}, {bits}-bit, source {d.kind}, "
          f"checkpoint {net.sha256[:12]}{said})")
    if item.row.get("notes"):  # what a run's result row would say: a page left, metadata dropped
        print(f"notes: {item.row['notes']}")
    return 0


def _in_outdir(path: str) -> str | None:
    """The colorize OUTDIR a path lies in (job.json beside results/), if any."""
    from pipeline.client.outdir import Outdir

    for d in Path(path).resolve().parents:
        if (d / Outdir.JOB).is_file() and (d / Outdir.RESULTS).is_dir():
            return str(d)
    return None


def _job_file(dest: str, outdir: str) -> str | None:
    """What of a job's own a file would replace (its manifest, results, outputs, job or audit
    files): an export with --force replaced the manifest and a results file by a slip, and
    the job's audit and redo then failed with tracebacks (an operator's trial). Names compared
    as a case-blind disk (macOS's) compares them; the manifest by identity (a link to it too)."""
    import re

    from pipeline.client.ledger import LEDGER
    from pipeline.client.outdir import RESERVE, STOPPED, Outdir

    if "://" in dest:
        return None
    dirs = {x.lower() for x in (Outdir.RESULTS, Outdir.IMAGES, Outdir.REVIEWS, Outdir.AUTOMATIC,
                                Outdir.QUARANTINE, Outdir.PREVIEWS)}
    files = {x.lower() for x in (Outdir.JOB, Outdir.REDO, Outdir.LOCK, STOPPED, LEDGER, RESERVE, Outdir.AUDIT_JSON,
                                 Outdir.AUDIT_HTML, Outdir.AUDIT_SKIPPED, Outdir.AUDIT_ERRORS,
                                 Outdir.AUDIT_OUTDATED)}
    d = Path(dest).resolve()
    for od in {Path(j).resolve() for j in (outdir, _in_outdir(dest)) if j and "://" not in j}:
        try:
            rel = d.relative_to(od)
            top = rel.parts[0].lower() if rel.parts else ""
            if top in dirs or (len(rel.parts) == 1 and (top in files or re.fullmatch(r"audit-sheet-\d+\.html", top))):
                return f"part of the job in {od} ({rel})"
        except ValueError:
            pass
        try:
            manifest = Outdir(str(od)).read_job().get("spec", {}).get("manifest") or ""
        except Exception:  # noqa: BLE001 - not a job (export says so): nothing of one to keep
            continue
        if manifest and "://" not in manifest and (d == Path(manifest).resolve() or (
                d.exists() and os.path.exists(manifest) and os.path.samefile(d, manifest))):
            return f"the manifest of the job in {od}"
    return None


def _ours(path: str) -> bool:
    """Whether a file carries this tool's provenance: an earlier quick look is replaced without
    asking, anything else (an original scan above all) only with --force."""
    from pipeline.client.outdir import carries_mark

    try:
        with open(path, "rb") as f:
            return carries_mark(f)
    except OSError:
        return False


def _hints_arg(a) -> list[dict]:
    """--hint X,Y,#rrggbb (repeated) and --hints FILE.json, as the hints' JSON (worker/hints.py)."""
    import json

    from pipeline.worker import hints

    try:
        got = [hints.parse(h) for h in a.hint or []]
        if a.hints:
            try:
                got += hints.from_json(json.loads(Path(a.hints).read_text(encoding="utf-8")))
            except OSError as e:
                raise UsageError(f"cannot read --hints {a.hints}: {e.strerror or e}") from None
            except json.JSONDecodeError as e:
                raise UsageError(f"--hints {a.hints} is not JSON: {e}") from None
    except hints.HintError as e:
        raise UsageError(str(e)) from None
    return hints.to_json(got)


# --- train -------------------------------------------------------------------------------------


def threading_main() -> bool:
    """Whether this is the main thread: signals go there only (a test may run a command in another)."""
    import threading

    return threading.current_thread() is threading.main_thread()


def cmd_train(a) -> int:
    from pipeline.model.train import train

    fields = TrainConfig.__dataclass_fields__
    cfg = TrainConfig(**{k: getattr(a, k) for k in fields if hasattr(a, k)})
    if not cfg.src:
        raise UsageError("train needs SRC (a folder or manifest of colour photos) or a job spec")
    if not Path(cfg.src).exists():
        raise UsageError(f"training source not found: {cfg.src}")
    how = {"signal": signal.SIGINT}

    def stopped(signum, frame):  # a batch system's SIGTERM as Ctrl-C: said, with the way on
        how["signal"] = signum
        raise KeyboardInterrupt

    was = signal.signal(signal.SIGTERM, stopped) if threading_main() else None
    began, last = time.time(), Path(cfg.out) / "last.pt"
    try:
        summary = train(cfg)
    except KeyboardInterrupt:  # as run says it: interrupted (Ctrl-C, 130), terminated (143)
        word = "interrupted" if how["signal"] == signal.SIGINT else "terminated"
        kept = last.is_file() and (cfg.resume or last.stat().st_mtime >= began)  # this training's
        print(f"colorize: {word}; " + (f"resume from the last epoch's checkpoint ({last}) with the "
              "same command and --resume" if kept else "no epoch of it was finished: nothing kept"),
              file=sys.stderr)
        return 128 + how["signal"]
    finally:
        if was is not None:
            signal.signal(signal.SIGTERM, was)
    print(f"best validation loss {summary['best_val_loss']:.5f} after {summary['step']} steps; "
          f"checkpoints in {summary['out']} (best.pt, last.pt, metrics.csv)")
    return 0


# --- scan / run / status ----------------------------------------------------------------------


def cmd_scan(a) -> int:
    from pipeline.client.manifest import missing_at_scan, scan

    if not str(a.output).endswith(".parquet"):
        raise UsageError(f"-o {a.output}: a manifest is a Parquet file; name it *.parquet")
    if a.extend and a.fresh:
        raise UsageError("--extend keeps an earlier manifest's rows, --fresh starts over: one of them")
    _only_ours(a.report, "--report", "a scan's report", _our_report)
    if a.extend is None and not a.fresh and _exists(a.output):
        # A rescan into the same file: the archive grew. Keeping the rows, ids and shards keeps
        # every job run on it valid; --fresh starts over (and a job then refuses the new one).
        a.extend = a.output
        print(f"colorize: {a.output} exists: its rows, ids and shards are kept and new files added "
              "(--fresh to start over)", file=sys.stderr)
    with _kept_before_fresh(a.output if a.fresh else None):
        t = scan(a.sources, a.output, shard_size=a.shard_size, max_pixels=a.max_pixels,
                 relative=a.relative, progress=not a.quiet,
                 log=lambda m: print(f"colorize: {plain(m)}", file=sys.stderr),
                 path_column=a.path_column, encoding=a.encoding, extend=a.extend,
                 delimiter=a.delimiter, report=a.report, path_prefix=a.path_prefix)
    errors = t.column("scan_error").to_pylist()
    bad = sum(e is not None for e in errors)
    if bad and bad == t.num_rows:
        k = next(i for i, e in enumerate(errors) if e)  # which file, and why
        first = f"{t.column('path')[k].as_py()}: {errors[k]}"
        hint = (" (the paths use backslashes: write them with / on this system)"
                if any("\\" in p for p in t.column("path").to_pylist()[:100]) else "")
        said = "its one file could not be read:" if bad == 1 else f"none of the {bad} files could be read, e.g."
        print(f"colorize: scan: {said} {first}{hint}; "
              f"wrote {a.output} anyway", file=sys.stderr)
        return 1
    shards = t.column("shard")[-1].as_py() + 1
    # a file a catalogue names that is not there is missing, not unreadable: another remedy
    missing = sum(map(missing_at_scan, errors))
    said = [f"{missing} missing"] * bool(missing) + [f"{bad - missing} unreadable"] * bool(bad - missing)
    unread = [(r, e) for r, e in zip(t.column("rel_path").to_pylist(), errors, strict=True)
              if e is not None and not missing_at_scan(e)]
    if unread:  # named, as the missing are above: which file, and why, is what one mends
        print(f"colorize: {plural(len(unread), 'file')} could not be read (each gets an error row "
              "saying so): " + "; ".join(f"{r}: {e}" for r, e in unread[:5])
              + (f"; ... ({len(unread) - 5} more)" if len(unread) > 5 else ""), file=sys.stderr)
    print(f"wrote {a.output}: {plural(t.num_rows, 'image')} in {plural(shards, 'shard')}"
          + (f", {' and '.join(said)} (they will get error rows)" if bad else ""))
    return 0


def _exists(path: str) -> bool:
    if "://" in str(path):
        import fsspec

        fs, p = fsspec.core.url_to_fs(str(path))
        return fs.exists(p)
    return Path(path).is_file()


@contextlib.contextmanager
def _kept_before_fresh(manifest: str | None):
    """--fresh over a manifest keeps the one it replaces beside it: a job run on that one keeps
    its shards, and refuses the new one (its images sharded otherwise) until it is back. Copied
    before the scan, kept (and said) only once the new one is written: a scan that fails
    replaces nothing, and a copy of it would be taken for the job's."""
    import datetime as dt
    import shutil

    if not manifest or "://" in str(manifest) or not Path(manifest).is_file():
        yield
        return
    p = Path(manifest)
    when = dt.datetime.fromtimestamp(p.stat().st_mtime).strftime("%Y%m%d-%H%M%S")
    kept, tmp = p.with_name(f"{p.stem}.before-fresh-{when}{p.suffix}"), p.with_name(f".{p.name}.before-fresh")
    shutil.copy2(p, tmp)
    try:
        yield
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if kept.exists():
        tmp.unlink()
    else:
        os.replace(tmp, kept)
    print(f"colorize: --fresh: the manifest it replaced is kept as {kept} (a job run on it "
          "needs it back to go on: a job keeps its shards)", file=sys.stderr)


def _only_ours(path: str | None, flag: str, what: str, ours) -> None:
    """--report and --summary-json replace a file only where it is one colorize wrote (a rerun
    replaces its own report): a trial named the catalogue it had just read, and a scan, and
    lost both. ours(first bytes) says whether it is such a file."""
    if not path or "://" in str(path) or not Path(path).exists():
        return
    if Path(path).is_dir():
        raise UsageError(f"{flag} {path}: a folder; name a file")
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return  # writing it says why
    if head.strip() and not ours(head):  # an empty one (mktemp's) holds nothing to lose
        raise UsageError(f"{flag} {path}: that file is there and is not {what} colorize wrote: "
                         "name another; colorize replaces only its own")


def _writable_beside(path: str | None, flag: str) -> None:
    """The folder takes the file (written through a temporary beside it): asked before the run,
    not found after a night's work (a trial's read-only folder: all 36 images done, exit 2)."""
    if not path or "://" in str(path):
        return
    probe = Path(path).with_name(f".{Path(path).name}.tmp")
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot be written there ({e.strerror or e})") from None


def _our_report(head: bytes) -> bool:
    return re.match(rb"(\xef\xbb\xbf)?kind[,;\t]path[,;\t]catalogue", head) is not None


def _our_summary(head: bytes) -> bool:
    return head.lstrip().startswith(b"{") and b'"outcome"' in head


def cmd_run(a) -> int:
    """A run, its signals handled, and --summary-json written however it ends."""
    if a.summary_json and (Path(a.summary_json).is_dir()
                           or not Path(a.summary_json).resolve().parent.is_dir()):  # before, not after
        raise UsageError(f"--summary-json {a.summary_json}: name a file in a folder that exists")
    _only_ours(a.summary_json, "--summary-json", "a run's summary", _our_summary)
    _writable_beside(a.summary_json, "--summary-json")
    import psutil  # noqa: F401 - loaded before a signal's handler may need it, never half-loaded

    main_thread = threading_main()
    began = time.perf_counter()  # this run's counts, not an earlier one's in this process
    stop = _stop_run(a.output, a.scheduler, a.summary_json, began)
    # SIGHUP: a closed terminal, a service's stop; but a signal nohup (or `&`) set to be
    # ignored stays ignored: such a run is meant to outlive its terminal
    caught = [s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
              if signal.getsignal(s) is not signal.SIG_IGN] if main_thread else []
    before = [signal.signal(s, stop) for s in caught]
    try:
        summary = _run(a)
        # nothing to do, but a results file committed by name is unreadable: not a good night
        # for a script that reads the exit code (3, as audit's for a job not whole)
        outcome = ("dry_run" if a.dry_run else "damaged" if summary.get("damaged")
                   else "nothing_to_do" if not summary.get("images") else "done")
        _write_summary(a.summary_json, a.output, outcome, summary)  # before a signal is let in
    except Exception as e:  # a monitor reads how this night's run ended, not last night's
        how = ("busy" if isinstance(e, Busy) else "unavailable" if isinstance(e, Unavailable)
               else "refused" if isinstance(e, UsageError) else "failed")
        try:  # what this run committed before it failed (none before its first shard)
            _write_summary(a.summary_json, a.output, how, {"reason": str(e), **_so_far(began)})
        except OSError as w:  # the run's own error is the one to tell
            print(f"colorize: --summary-json not written: {w.strerror or w}", file=sys.stderr)
        raise
    finally:
        for sig, was in zip(caught, before, strict=True):
            signal.signal(sig, was)
    return 3 if outcome == "damaged" else 0


def _run(a) -> dict:
    from pipeline.client.jobspec import IDENTITY_FIELDS, from_args
    from pipeline.client.orchestrate import run_job
    from pipeline.client.outdir import Outdir
    from pipeline.client.state import job_checkpoint, other_version

    _refuse_contradictions(a)
    if a.manifest is not None and not str(a.manifest).strip() and "manifest" in getattr(a, "given", set()):
        raise UsageError("--manifest is empty (an unset variable?): name the manifest, or leave "
                         "--manifest out to go on with the job in OUTDIR")
    if a.scheduler is not None:
        from pipeline.client.cluster import scheduler_address

        a.scheduler = scheduler_address(a.scheduler)
    if a.output and Outdir(a.output).has_job() and not (a.manifest and a.restart):
        # `colorize run -o OUTDIR` (with --repair, --dry-run, or --manifest where the manifest is
        # now): the job is in its job.json; what the user names on the line still wins (and is
        # checked against it). A restart with another manifest is a new job: the line's alone.
        old = Outdir(a.output).read_job()["spec"]
        for k in ("manifest", "checkpoint", *IDENTITY_FIELDS):
            if k not in getattr(a, "given", set()) and k in old:
                setattr(a, k, old.get(f"{k}_given", old[k]))  # metadata_columns: 'auto' guesses again
        if "checkpoint" not in getattr(a, "given", set()):
            try:
                a.checkpoint = job_checkpoint(old)
            except CheckpointError:  # gone: a restart (a new job) or a job this one refuses anyway
                if not (a.restart or other_version(a.output, old)):  # does not need those weights
                    raise
                a.checkpoint = None
                if a.restart:
                    print(f"the job's checkpoint {old.get('checkpoint')} is gone: --restart colours with "
                          "the shipped weights (--checkpoint PATH for others)", file=sys.stderr)
        # said before the checks that may still refuse it: what is read, not what will be done
        what = "starting over" if getattr(a, "restart", False) else "reading"
        print(f"{what} the job recorded in {a.output}/{Outdir.JOB}", file=sys.stderr)
    if not a.manifest and a.output:
        raise UsageError(f"no job in {a.output} to continue (no {Outdir.JOB}); a new job needs "
                         "--manifest too (or a job spec JOB.toml)")
    if not a.manifest or not a.output:
        raise UsageError("run needs --manifest and -o OUTDIR (or a job spec JOB.toml)")
    if "://" not in a.output and Path(a.output).exists() and not Path(a.output).is_dir():
        raise UsageError(f"-o {a.output} is a file; OUTDIR is a folder (made if missing)")
    m = Path(a.manifest)
    if "://" not in a.manifest and (m.is_dir() or m.suffix.lower() in (".csv", ".tsv", ".txt")):
        what = "a folder" if m.is_dir() else f"a {m.suffix[1:].upper()} list"
        raise UsageError(f"--manifest {a.manifest} is {what}, not a manifest; make one first: "
                         f"colorize scan {a.manifest} -o manifest.parquet")
    if "://" not in a.manifest and not m.is_file():
        raise UsageError(f"manifest not found: {a.manifest}; " + (
            _moved_advice(a.output) if "manifest" not in getattr(a, "given", set())  # job.json's
            else "make one first: colorize scan SOURCES -o manifest.parquet"))
    redo = _redo_request(a) if a.redo else None
    if a.hinted:
        redo = _hinted_request(a, redo)
    # The resource tracker this process may start inherits these: after a Ctrl-C it cleans up
    # the killed workers' semaphores, which is its job, not news for the user.
    if TRACKER_QUIET not in sys.warnoptions:
        sys.warnoptions.append(TRACKER_QUIET)
    return run_job(from_args(a), log=_surviving_log(), redo=redo)


def _surviving_log():
    """The run's log lines (stdout). One that cannot be written (a full log disk under cron, a
    reader that left the pipe) costs the lines, not the night's run: a trial's run with stdout
    on a full disk colorized nothing and exited 2, as if OUTDIR were full. Its stdout is then
    pointed at /dev/null, so no later line (nor Python's flush at exit) fails again."""
    def log(msg: str = "") -> None:
        try:
            print(msg, flush=True)
        except OSError:
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return log


SUMMARY_KEYS = ("reason", "signal", "pending_shards", "pending_images", "redo_images", "images", "ok", "error", "skipped", "elapsed",
                "images_per_s", "steady_images_per_s", "startup_s", "worker_peak_rss_mb",
                "client_peak_rss_mb", "job")


def _write_summary(path: str | None, outdir: str, outcome: str, summary: dict,
                   job: dict | None = None) -> None:
    """--summary-json: written however the run ends (done, nothing_to_do, dry_run, refused,
    busy, failed, interrupted, terminated), with the whole job's counts (`job`: its status, if
    known already) beside this run's."""
    if not path:
        return
    import datetime as dt

    # when and by which process: a monitor tells a stale file (a run killed -9 writes none) from
    # this night's, and a refused run's (busy) from the one that holds OUTDIR
    # the same keys however it ended (null where this run has no figure: a failed or stopped
    # run's counts), so that a monitor reads one shape (a trial's differed by outcome)
    out = {"outcome": outcome, "written": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "pid": os.getpid(), **dict.fromkeys(SUMMARY_KEYS), "damaged": [], **summary}
    try:
        from pipeline.client.orchestrate import status

        s = job or status(outdir, manifest_gone_ok=True)  # a refusal for it: the counts still
        out["job"] = {k: s[k] for k in ("shards", "committed", "pending", "images", "ok", "error",
                                        "skipped", "gone", "damaged", "extra", "redo_pending")}
    except Exception:  # noqa: BLE001 - no job yet (refused before one), or OUTDIR unreadable
        pass
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    tmp.write_text(json.dumps(out, indent=2))
    os.replace(tmp, path)


TRACKER_QUIET = "ignore::UserWarning:multiprocessing.resource_tracker"


def _refuse_contradictions(a) -> None:
    """Flags that would do nothing, or undo each other, are said rather than dropped."""
    if a.redo_column and not a.redo:
        raise UsageError(f"--redo-column {a.redo_column} says how to read --redo's list; name the "
                         "images too: --redo LIST")
    inside = [f for f, on in (("--repair", a.repair), ("--redo", a.redo), ("--hinted", a.hinted))
              if on]
    if a.restart and inside:
        raise UsageError(f"--restart discards the job's results and starts over, and {inside[0]} "
                         "works inside them: use one or the other")


def _hinted_request(a, redo_req):
    """--hinted: the images whose curator's hints changed since their output was written, each
    with its own hints, on top of a --redo on the same line."""
    from pipeline.client import redo
    from pipeline.client.outdir import Outdir

    if not Outdir(a.output).has_job():
        raise UsageError(f"--hinted colours again images of the job in an OUTDIR; {a.output} holds "
                         "none yet (run the job, then review it: colorize review OUTDIR)")
    picked, per_image = redo.hinted(Outdir(a.output), keep=not a.dry_run,
                                    log=lambda m: print(f"colorize: {plain(m)}", file=sys.stderr))
    n = sum(map(len, picked.values()))
    print(f"--hinted: {plural(n, 'image')} whose hints changed since their output was written",
          file=sys.stderr)
    if redo_req is None:
        return picked, {}, per_image
    for shard, ids in picked.items():
        redo_req[0].setdefault(shard, set()).update(ids)
    return redo_req[0], redo_req[1], per_image


def _redo_request(a) -> tuple[dict[int, set[str]], dict]:
    """--redo: the images it names (shard -> ids), and the options named on the line that are
    for them alone (--recolor): the job itself stays as it is."""
    from pipeline.client import redo
    from pipeline.client.outdir import Outdir

    if not Outdir(a.output).has_job():
        raise UsageError(f"--redo redoes images of the job in an OUTDIR; {a.output} holds none yet "
                         "(run the job first)")
    old = Outdir(a.output).read_job()["spec"]
    options = {}
    for k in redo.PER_IMAGE:
        if getattr(a, k) != old.get(k):
            options[k] = getattr(a, k)
            setattr(a, k, old.get(k))  # the job's fingerprint is unchanged
    return redo.select(a.manifest, a.redo, a.redo_column,
                       log=lambda m: print(f"colorize: {plain(m)}", file=sys.stderr)), options


def _committed_said(s: dict) -> str:
    """What an interrupted run leaves, as status says it: a redo's shards were whole already."""
    redo = f", a redo of {plural(s['redo_pending'], 'image')} unfinished" if s.get("redo_pending") else ""
    return f"{s['committed']} of {plural(s['shards'], 'shard')} committed{redo}"


def _so_far(since: float) -> dict:
    """This run's counts until now, where it began sending shards (without loading the cluster's
    modules for a run refused before)."""
    m = sys.modules.get("pipeline.client.orchestrate")
    return m.so_far(since) if m else {}


def _stop_run(outdir: str, scheduler: str | None = None, summary_json: str | None = None,
              began: float = 0.0):
    """Ctrl-C (or a batch system's SIGTERM) during a run: the local workers are ended at once (a
    shard commits whole or not at all, so nothing is lost but the shards in flight), then what
    is committed is counted, so the count said is the count on disk, and the process exits
    (128 + the signal) without unwinding the cluster: within a second, a second signal ignored,
    no traceback. A cluster the user runs finishes the shards it was running (the same bytes a
    rerun would write)."""

    def handler(signum, frame):
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        try:
            from pipeline.client.cluster import kill_local_processes

            kill_local_processes()
            how = "interrupted" if signum == signal.SIGINT else "terminated"
            msg, s = f"colorize: {how}", None
            again = "colorize run -o " + " ".join(map(shlex.quote, [outdir, *(["--scheduler", scheduler] if scheduler else [])]))
            try:
                from pipeline.client.orchestrate import status

                s = status(outdir)  # once: the line and the summary say the same count
                msg += f"; {_committed_said(s)}"
                if scheduler:
                    msg += " (the cluster's workers finish the shards they were running)"
                msg += f"; resume with: {again}"
            except Exception:  # nothing committed yet (no job.json), or a remote OUTDIR gone away
                pass
            try:
                _write_summary(summary_json, outdir, how, {"signal": signal.Signals(signum).name,
                                                           "pending_shards": (s or {}).get("pending"),
                                                           **_so_far(began)}, job=s)
            except OSError:
                pass
            try:  # a hung-up terminal cannot be written to (EIO): the exit code still says it
                print(msg, file=sys.stderr)
                sys.stdout.flush()
                sys.stderr.flush()
            except OSError:
                pass
        finally:
            os._exit(128 + signum)

    return handler


def cmd_export(a) -> int:
    """The results for the archive's database or a spreadsheet: the catalogue's columns first."""
    from pipeline.client.export import export

    if (what := _job_file(a.dest, a.outdir)):
        raise UsageError(f"{a.dest} is {what}: an export never replaces it, --force or not; name "
                         "another file (beside OUTDIR, or in it under a new name)")
    if Path(a.dest).exists() and not a.force:
        raise UsageError(f"{a.dest} exists; choose another name or add --force to replace it")
    if "://" not in a.dest and not Path(a.dest).resolve().parent.is_dir():
        raise UsageError(f"no folder {Path(a.dest).parent} to write {Path(a.dest).name} in")
    ext = Path(a.dest.split("://", 1)[-1]).suffix.lower()
    if ext not in (".csv", ".tsv", ".txt", ".xlsx", ".xlsm", ".parquet"):
        raise UsageError(f"export writes CSV (.csv, .tsv, .txt), a workbook (.xlsx) or one "
                         f"Parquet table (.parquet); {Path(a.dest).name} would be a CSV under "
                         "another name")
    if a.excel and not a.dest.lower().endswith((".xlsx", ".xlsm")):
        raise UsageError(f"--excel writes a workbook: name it *.xlsx, not {a.dest}")
    try:
        with _manifest_moved(a.outdir):
            r = export(a.outdir, a.dest, excel=a.excel or None, delimiter=a.delimiter,
                       encoding=a.encoding)
    except UnicodeEncodeError as e:
        raise UsageError(f"a cell holds {e.object[e.start:e.end]!r}, which {a.encoding} cannot "
                         "write; use --encoding utf-8-sig") from None
    except LookupError:
        raise UsageError(f"unknown encoding {a.encoding!r}") from None
    how = ("a workbook" if r["format"] == "xlsx" else "Parquet" if r["format"] == "parquet" else
           f"CSV, {DELIMITER_NAMES.get(r['delimiter'], repr(r['delimiter']))}-separated, "
           f"{r['encoding']}")
    if not a.quiet:
        print(f"wrote {a.dest} ({how}): {plural(r['rows'], 'image')}, columns {', '.join(r['header'][:4])}, ...")
    if r["format"] != "csv" and (unused := [f for f, v in (("--delimiter", a.delimiter), ("--encoding", a.encoding != "utf-8-sig")) if v]):
        print(f"colorize: {' and '.join(unused)} not used: {'it is' if len(unused) == 1 else 'they are'} for a CSV, not {how}", file=sys.stderr)
    _say_unfinished(a.outdir, r["rows"])
    if f := r.get("formulas"):
        k, col, v = f[0]
        print(f"colorize: note: {plural(len(f), 'catalogue cell')} {'begins' if len(f) == 1 else 'begin'} "
              f"as a formula does (row {k + 2}'s {col!r}: {plain(v[:40])!r}): Excel runs such a cell "
              "when it opens a CSV, so open it through Data > From Text, or export to .xlsx, which "
              "keeps every cell as text; written as the catalogue has it", file=sys.stderr)
    nofile = r.get("no_file", 0)
    if nofile:  # a database that takes the export for its catalogue would lose these records
        print(f"colorize: note: {nofile:,} catalogue row{'s name' if nofile != 1 else ' names'} no "
              "file (an empty path cell) and so no image: not in the export (colorize scan "
              "--report lists them)", file=sys.stderr)
    if twice := r.get("listed_twice"):  # another record of a file: the file's row is the first's
        print(f"colorize: note: {plural(len(twice), 'catalogue row')} {'names' if len(twice) == 1 else 'name'} "
              f"a file an earlier row names, with other cells ({', '.join(twice[:3])}"
              f"{' ...' if len(twice) > 3 else ''}): the file's row is the first's, and "
              f"{'that record is' if len(twice) == 1 else 'those records are'} not in the export "
              "(colorize scan --report lists them: duplicate)", file=sys.stderr)
    return 0


def _say_unfinished(outdir: str, rows: int) -> None:
    """An export of a job not yet finished is what is done so far: said, so that a table of
    part of the archive is not taken for the whole."""
    from pipeline.client.orchestrate import status
    from pipeline.client.outdir import run_hint

    try:
        s = status(outdir)
    except Exception:  # noqa: BLE001 - the manifest moved: the export itself was whole
        return
    left = s["images"] - rows
    if s["pending"] and left > 0:
        why = ("a run is colorizing them now" if s["running"] else
               f"resume with: {run_hint(outdir)}")
        print(f"colorize: note: {left:,} image{'s' if left != 1 else ''} of {s['images']:,} not done yet ({why}); "
              "the export lists those done", file=sys.stderr)


def cmd_review(a) -> int:
    from pipeline.client.manifest import job_results
    from pipeline.client.outdir import Outdir
    from pipeline.client.review import serve

    od = Outdir(a.outdir)  # a damaged results file of the job: said, not a page of 500s
    job_results(od, manifest := od.read_job()["spec"]["manifest"])
    if "://" not in manifest and not os.path.exists(manifest):  # the page works from the results
        print(f"colorize: note: the job's manifest {manifest} is not there (moved?): the page shows "
              "the results in path order, not the catalogue's; a --hinted run needs it named again: "
              f"{_moved_advice(a.outdir)}", file=sys.stderr)
    try:
        serve(a.outdir, port=a.port, browser=not a.no_browser, who=a.reviewer, per_page=a.page_size)
    except OSError as e:  # every edit is saved there as it is made (Arrow's: errno in the text)
        if "Permission denied" not in str(e) or "reviews" not in str(getattr(e, "filename", None) or e):
            raise
        raise UsageError(f"cannot write {Path(a.outdir) / 'reviews'} (permission denied): the "
                         "review page saves each verdict, note and hint there; ask for write "
                         "access to it (the group's, on a share)") from None
    return 0


@contextlib.contextmanager
def _manifest_moved(outdir: str):
    """A job whose manifest is not where job.json says: moved (with its scans), most likely."""
    from pipeline.errors import ScanError

    try:
        yield
    except ScanError as e:
        if "manifest not found" not in str(e):
            raise
        raise UsageError(f"{e}; {_moved_advice(outdir)}") from None


def _moved_advice(outdir: str) -> str:
    return ("if it was moved, name it where it is now (the same manifest: nothing is redone): "
            f"colorize run -o {shlex.quote(outdir)} --manifest NEW/PATH.parquet")


def _no_job_yet(a, e: UsageError) -> int:
    """status of an OUTDIR with no job.json: a first run still starting where one holds its
    lock (connecting, a GPU worker to join: a trial's status said 'no_job', exit 2, for up to
    --resource-timeout), else no job (exit 2), in JSON too for a monitor."""
    from pipeline.client.outdir import Outdir

    try:
        holder = Outdir(a.outdir).lock_holder()
    except Exception:  # noqa: BLE001 - no OUTDIR at all: no job, as said
        holder = None
    if holder:
        said = f"a run is starting in {a.outdir} ({holder}): no job.json yet"
        print(json.dumps({"state": "starting", "running": holder, "reason": said}) if a.json else said)
        return 0
    if a.json:
        print(json.dumps({"state": "no_job", "reason": str(e)}))
    raise e


def _status_state(s: dict) -> str:
    """status --json's state, as its sentences say it (a manifest made anew first: the results
    it leaves without a shard are not damage)."""
    return ("manifest_missing" if s["manifest_missing"]
            else "manifest_changed" if s["manifest_changed"] and not s["running"]
            else "damaged" if s["damaged"] or s["extra"] or s["lost"] else "running" if s["running"]
            else "complete" if not (s["pending"] or s["redo_pending"])
            else "other_version" if s["other_version"]
            else "stopped" if s["stopped"] else "grown" if s["grown"] and not s["redo_pending"]
            else "interrupted")


def _status_json(outdir: str, s: dict) -> int:
    """One object for a monitor, the same keys every time; state first."""
    state = _status_state(s)
    s["manifest_changed"] = [int(k) for k in s["manifest_changed"]]  # shard numbers, as damaged's
    if s["manifest_missing"]:  # the counts the results give, and what a run needs
        s["manifest_missing"] += f"; {_moved_advice(outdir)}"
    print(json.dumps({"state": state, **s}, default=str))
    # a job not whole, as run and audit say it; a manifest to find or put back before a run goes on
    return 3 if state == "damaged" else 2 if state in ("manifest_missing", "manifest_changed") else 0


def cmd_status(a) -> int:
    from pipeline.client.metrics import rate_words
    from pipeline.client.orchestrate import status
    from pipeline.client.outdir import run_hint

    try:
        s = status(a.outdir, check_manifest=True, manifest_gone_ok=True)
    except UsageError as e:  # a monitor polling before the first run reads JSON all the same
        return _no_job_yet(a, e)
    if a.json:
        return _status_json(a.outdir, s)
    if s["manifest_missing"]:  # what is done is known; what is left, not until it is found
        print(f"{a.outdir}: shards {s['committed']} committed; images {s['ok']} ok, {s['error']} "
              f"error, {s['skipped']} skipped (how many are left: the manifest says)")
        raise UsageError(f"{s['manifest_missing']}; {_moved_advice(a.outdir)}")
    if s["job_altered"]:
        print(f"{a.outdir}/job.json was edited since the run wrote it ({s['job_altered']}): a run "
              f"refuses it; `colorize audit {shlex.quote(a.outdir)}` says what to do")
    # a run refuses it: no "resume with" line, and no counts of another manifest's shards, no --repair
    if s["manifest_changed"] and not s["running"]:
        from pipeline.client.outdir import Outdir
        from pipeline.client.state import made_anew_said

        spec = Outdir(a.outdir).read_job()["spec"]
        print(made_anew_said(a.outdir, spec["manifest"], s["manifest_changed"], spec.get("shard_digests") or {}))
        return 2  # as a manifest gone: a run refuses it until its manifest is put back
    if s["lost"] and not s["running"]:  # committed once: no interruption left it pending
        print(f"{plural(len(s['lost']), 'results file')} committed before {'is' if len(s['lost']) == 1 else 'are'} "
              f"gone (shard {', '.join(map(str, s['lost']))}; deleted or moved since?): put "
              f"{'it' if len(s['lost']) == 1 else 'them'} back, or `colorize audit {shlex.quote(a.outdir)}` "
              f"says what is left and `{run_hint(a.outdir, '--repair')}` mends it")
    elif s["other_version"] and not s["running"] and (s["pending"] or s["redo_pending"]):  # a resume is refused
        print(f"{s['committed']} of {plural(s['shards'], 'shard')} committed; {s['other_version']}")
    elif (s["pending"] or s["redo_pending"]) and not s["running"]:  # stopped: say so first
        redo = (f", a redo of {plural(s['redo_pending'], 'image')} unfinished"
                if s["redo_pending"] else "")
        how = (f"stopped at {s['stopped']['at']} by a failure: {s['stopped']['reason']}\n"
               if s["stopped"] else "the manifest grew (new scans not yet run): "
               if s["grown"] and not s["redo_pending"] else "interrupted: ")
        print(f"{how}{s['committed']} of {plural(s['shards'], 'shard')} committed{redo}; "
              f"resume with: {run_hint(a.outdir)}")
    print(f"{a.outdir}: shards {s['committed']} committed, {s['pending']} pending of {s['shards']}; "
          f"images {s['ok']} ok, {s['error']} error, {s['skipped']} skipped"
          + (f", {s['gone']} gone" if s["gone"] else "") + f" of {s['images']}")
    if s["other_version"] and not (s["pending"] or s["redo_pending"]):  # finished: a redo is refused
        print(f"note: {s['other_version']}")
    if s["running"]:
        pace = ""
        if "eta_s" in s:
            left = ("less than a minute" if s["eta_s"] < 60 else
                    f"about {plural(round(s['eta_s'] / 60), 'minute')}")
            pace = f"; {rate_words(s['images_per_s'])}, {left} to go"
        if "stalled_s" in s:
            pace = (f"; but no shard committed for {round(s['stalled_s'] / 60)} min (are its "
                    "workers alive? `colorize run` says so when it has none)")
        print(f"a run is active ({s['running']}){pace}")
    if s["lost"] and not s["running"] and not (s["damaged"] or s["extra"]):
        return 3
    if s["damaged"] or s["extra"]:
        said = [f"{plural(len(s['damaged']), 'results file')} damaged (shard "
                f"{', '.join(map(str, s['damaged']))}: not counted above)"] if s["damaged"] else []
        said += [f"{plural(len(s['extra']), 'results file')} for no shard of the job ("
                 f"{', '.join(s['extra'])}: not counted above)"] if s["extra"] else []
        again = " and colorizes a damaged one's shard again" if s["damaged"] else ""
        print(f"{'; '.join(said)}; `colorize run -o {shlex.quote(a.outdir)} --repair` sets "
              f"{'it' if len(s['damaged']) + len(s['extra']) == 1 else 'them'} aside in "
              f"quarantine/{again}", file=sys.stderr)
        return 3
    return 0


def cmd_evaluate(a) -> int:
    from pipeline.model.evaluate import evaluate

    if a.src != "wheels" and not Path(a.src).exists():
        raise UsageError(f"evaluation photos not found: {a.src}")
    s = evaluate(a.checkpoint, a.src, a.out, size=a.size, max_side=a.max_side, device=a.device,
                 pad=a.pad, hints=a.hints, hint_checkpoint=a.hint_checkpoint,
                 hint_head=a.hint_head, film=a.film,
                 damage=a.damage)
    print(f"model ab-MSE {s['model']['ab_mse']:.5f} (gray {s['gray']['ab_mse']:.5f}, mean-ab "
          f"{s['mean_ab']['ab_mse']:.5f}); report in {a.out}/eval.md, contact sheet {a.out}/contact_sheet.png")
    return 0


def _counts(s: str) -> tuple[int, ...]:
    try:
        got = tuple(int(x) for x in s.split(","))
    except ValueError:
        got = (-1,)
    if any(n < 0 for n in got):
        raise argparse.ArgumentTypeError(f"expected counts like 0,1,3,10,30, got {s!r}")
    return got


def cmd_tune_gain(a) -> int:
    from pipeline.model.evaluate import gain_photos, tune_gain

    try:
        photos = gain_photos(a.collection, log=lambda m: print(f"colorize: {m}", file=sys.stderr))
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(f"{e} (give the photos held out of the checkpoint's training: the OUT/val.txt "
                         "`colorize train` wrote, or a `make train-data` collection)") from None
    r = tune_gain(a.checkpoint, photos, a.out, size=a.size, device=a.device)
    print(f"wrote {a.out} with chroma gain {r['gain']:.1f} (chosen on {plural(r['photos'], 'validation photo')})")
    return 0


def _left_alone(r: dict) -> str:
    """What audit found in images/ at names no row gives: the user's files, and outputs of ours
    renamed or copied (a curator's save-as): each named, none moved."""
    some = [(r["foreign_files"], "that colorize did not write"),
            (r.get("renamed_outputs") or [], "with colorize's provenance at names no row gives "
                                             "(renamed, copied or retouched)")]
    return "; ".join(f"{plural(len(f), 'file')} in images/ {what} (left alone): " + ", ".join(f[:5])
                     + (" ..." if len(f) > 5 else "") for f, what in some if f)


def cmd_audit(a) -> int:
    from pipeline.client.audit import audit, how_stopped, record_refusal
    from pipeline.client.orchestrate import made_anew
    from pipeline.client.outdir import Outdir, run_hint
    from pipeline.client.redo import said_label
    from pipeline.client.state import other_version

    holder = Outdir(a.outdir).lock_holder()
    if holder is not None:
        print(f"colorize: a run is writing {a.outdir} ({holder}); audit it once the run has "
              f"finished (`colorize status {a.outdir}` shows its progress)", file=sys.stderr)
        return 3  # unfinished, as the help says
    try:
        with _manifest_moved(a.outdir):
            if said := made_anew(a.outdir):  # measured against it, every shard looks broken, and
                raise UsageError(f"audit cannot check the job: {said}")  # its --repair is refused
            r = audit(a.outdir, quick=a.quick, check_inputs=a.check_inputs, progress=not a.quiet,
                      sheet=a.sheet)
    except UsageError as e:
        if Outdir(a.outdir).has_job():  # not the last audit's verdict left in its report
            record_refusal(a.outdir, str(e))
        raise
    c = r["counts"]
    line = (f"{r['manifest_rows']} manifest rows, {r['result_rows']} result rows "
            f"({c['ok']} ok, {plural(c['error'], 'error')}, {c['skipped']} skipped"
            + (f", {len(r['gone'])} gone)" if r.get("gone") else ")"))
    note = _left_alone(r)
    if r["redone"]:
        how = [f"{n} with {said_label(k)}" for k, n in sorted(r["redone"].items()) if k != "redo"]
        if how and r["redone"].get("redo"):  # every redone image in the breakdown, or none
            how.append(f"{r['redone']['redo']} with the job's own options")
        line += f"; redone: {sum(r['redone'].values())}" + (f" ({', '.join(how)})" if how else "")
    line += _reviewed(r["review"], a.outdir)
    spec = Outdir(a.outdir).read_job()["spec"]  # another colorize's job: its advice is refused here
    other = other_version(a.outdir, spec, finished=not r["incomplete"])
    if r["incomplete"]:  # a run that stopped: nothing committed is wrong, there is just more to do
        redo = (f", a redo of {plural(len(r['redo_pending']), 'image')} unfinished"
                if r["redo_pending"] else "")
        print(f"audit incomplete: {how_stopped(r)}: {r['committed_shards']} of "
              f"{plural(r['shards'], 'shard')} committed{redo}; "
              + (other or f"{'run' if r.get('grown') else 'resume'} with: {run_hint(a.outdir)}"))
        print(f"  the committed shards are intact ({line}); {_report_in(r, a.outdir)}")
        return 3
    if r["ok"]:
        verdict = r["verdict"]
        if r.get("report_error"):  # no audit.html to point to: the reasons follow here
            verdict = verdict.replace(f"(each one's reason: {Outdir.AUDIT_HTML})", "(reasons below)")
        print(f"audit {verdict}: {line}; {plural(len(r['nearly_gray']), 'nearly gray output')} "
              f"for review; {_report_in(r, a.outdir)}")
        for said in _audit_notes(r, a.outdir):
            print(said)
        if note:
            print(note)
        if other:  # the notes' redo and hinted runs are refused by this colorize
            print(f"note: {other}")
        return 0
    print(f"audit FAILED: {line}", file=sys.stderr)
    for p in r["problems"][:50]:
        what = p.get("output_path") or p.get("source_path") or p.get("path") or p.get("image_id")
        print(f"  {p['kind']}: {what}" + (f" ({p['reason']})" if "reason" in p else ""),
              file=sys.stderr)
    if len(r["problems"]) > 50:
        print(f"  ... and {len(r['problems']) - 50} more in audit.json", file=sys.stderr)
    if note:
        print(note, file=sys.stderr)
    if other:  # the advice below runs this colorize, which refuses the job
        print(f"note: {other}", file=sys.stderr)
    print(_audit_advice(a.outdir, r["problems"]) + f"; {_report_in(r, a.outdir)}", file=sys.stderr)
    return 1


def _found_elsewhere(moved: list[dict]) -> str:
    """Of the gone, those whose bytes are in the job under another name: a rename, said so."""
    if not moved:
        return ""
    m = moved[0]
    return (f"; {len(moved)} of them {'is' if len(moved) == 1 else 'are'} in the job under another "
            f"name, the same bytes (renamed or moved, or a copy that stayed; colorized there too; "
            f"audit.json: moved), e.g. {m['was']!r} -> {m['now'][0]!r}")


def _outdated_said(r: dict, outdir: str) -> list[str]:
    """Outputs whose XMP holds an older record than the catalogue's or their sidecar's now."""
    from pipeline.client.outdir import Outdir, run_hint

    redo = run_hint(outdir, "--redo", f"{outdir}/{Outdir.AUDIT_OUTDATED}")
    out = []
    if old := r["record_outdated"]:
        out.append(f"{plural(len(old), 'output')} {'carries' if len(old) == 1 else 'carry'} older "
                   f"catalogue cells than the manifest (a catalogue corrected and scanned again, or another "
                   f"catalogue's column read since); the export has the new ones; to write them into "
                   f"the files' XMP: {redo}")
    if old := r.get("sidecar_outdated"):
        known = " (as the last audit --check-inputs found; not read again)" if r.get("sidecar_outdated_known") else ""
        out.append(f"{plural(len(old), 'output')} {'carries' if len(old) == 1 else 'carry'} the record "
                   f"of an XMP sidecar edited or removed since{known} (e.g. {old[0]}); to write the "
                   f"sidecar's record as it is now into the files' XMP: {redo}")
    return out


def _audit_notes(r: dict, outdir: str) -> list[str]:
    """What a passed audit found that deserves a look, each with what to do about it."""
    from pipeline.client.outdir import run_hint

    if r.get("report_error"):  # a read-only OUTDIR: the notes that point to no file, and the reasons
        said = [n for n in _audit_notes({**r, "report_error": None, "errors": [], "skipped": [],
                                         "record_outdated": [], "sidecar_outdated": [], "copies": [], "gone": []}, outdir)]
        return said + [f"{plural(len(rows), 'image')} {what}: " + "; ".join(
            f"{x['source_path']!r}" + (f" ({x['error']})" if x.get("error") else "") for x in rows[:10])
            + (f" ... and {len(rows) - 10} more" if len(rows) > 10 else "")
            for rows, what in ((r["errors"], "could not be colorized"), (r["skipped"], "skipped as colour"),
                               (r.get("gone") or [], "whose original the last scan did not find (kept)"))
            if rows]
    out = []
    if tmp := r.get("temporaries"):
        out.append(f"{plural(len(tmp), 'temporary file')} of a write a kill interrupted, e.g. {tmp[0]} "
                   f"(not an output; the next `colorize run -o {shlex.quote(outdir)}` removes "
                   f"{'it' if len(tmp) == 1 else 'them'})")
    if pages := r.get("pages_left"):
        out.append(f"{plural(len(pages), 'file')} of several pages: only the first page of each "
                   f"colorized, e.g. {pages[0]['source_path']!r} ({pages[0]['note']}); audit.html "
                   "lists them (pages_left), and how to colour every page")
    if r.get("copies"):
        n = sum(len(g) for g in r["copies"])
        out.append(f"{n} images are copies of another (the same bytes, "
                   f"{plural(len(r['copies']), 'group')}, e.g. {' = '.join(r['copies'][0][:2])}): "
                   "each was colorized; audit.json lists them (copies)")
    if (shared := r.get("shared_identifiers") or {}).get("groups"):
        from pipeline.client.catalogue import shared_said

        out.append(shared_said(shared["groups"], shared["column"]) + "; audit.html lists them")
    out += _outdated_said(r, outdir)
    for k in r.get("lists_kept") or []:  # the curator's edit: the README says to make one
        out.append(f"{outdir}/{k['list']} was edited since the audit wrote it: kept as edited (this "
                   f"audit's list would hold {plural(k['would_hold'], 'line')}; remove the file to "
                   "have it written again)")
    if r["skipped"]:
        from pipeline.client.audit import redo_skipped_advice

        out.append(f"{plural(len(r['skipped']), 'image')} skipped as colour. {redo_skipped_advice(outdir)}")
    if n := len(r.get("gone") or ()):
        out.append(f"the original{'' if n == 1 else 's'} of {plural(n, 'image')} {'is' if n == 1 else 'are'} "
                   "gone (the last scan did not find it: renamed, moved, removed, or a catalogue row "
                   "corrected): kept, counted apart, 'gone' in the export's source_state (audit.json "
                   "lists them: gone)" + _found_elsewhere(r.get("moved") or []))
    if folders := r.get("unread_folders"):
        out.append(f"{plural(len(folders), 'source folder')} could not be read at the scan, so "
                   f"none of {'its' if len(folders) == 1 else 'their'} pictures is in this job: "
                   f"{'; '.join(folders[:3])}{' ...' if len(folders) > 3 else ''} (make "
                   f"{'it' if len(folders) == 1 else 'them'} readable, scan again into the manifest, "
                   f"and run: {outdir} goes on)")
    if late := r.get("unrecorded_shards"):
        out.append(f"{plural(len(late), 'shard')} ({', '.join(map(str, late[:10]))}"
                   f"{' ...' if len(late) > 10 else ''}) {'was' if len(late) == 1 else 'were'} committed "
                   "after the run's client had stopped, so commits.jsonl has no line to tell an edit "
                   f"to {'it' if len(late) == 1 else 'them'} since; the next run records "
                   f"{'it' if len(late) == 1 else 'them'} as {'it is' if len(late) == 1 else 'they are'}: "
                   + run_hint(outdir))
    if r["errors"]:
        from pipeline.client.audit import redo_errors_advice

        out.append(f"{plural(len(r['errors']), 'image')} could not be colorized (reasons in the "
                   f"report). {redo_errors_advice(outdir)}")
    return out


def _report_in(r: dict, outdir: str) -> str:
    if r.get("report_error"):
        return f"no report written ({r['report_error']}; the verdict stands)"
    return f"report in {outdir}/audit.html"


def _reviewed(rv: dict, outdir: str) -> str:
    """The curators' verdicts, notes and hints, for the audit's line ("" before any review)."""
    from pipeline.client.audit import reviewed_said
    from pipeline.client.outdir import run_hint

    if not (said := reviewed_said(rv)):
        return ""
    said = "; " + said
    if rv["hints_pending"]:
        named = rv.get("hints_pending_sources") or []
        said += (f" ({len(rv['hints_pending'])} with hints newer than their output"
                 + (f", {', '.join(map(repr, named[:3]))}{' ...' if len(named) > 3 else ''}" if named else "")
                 + f": {run_hint(outdir, '--hinted')})")
    return said


def _audit_advice(outdir: str, problems: list[dict]) -> str:
    """What fixes what the audit found: --repair rewrites our outputs; it cannot bring back an
    original, and a changed original is colorized again only when asked (--redo)."""
    from pipeline.client.outdir import Outdir, run_hint

    kinds = {str(p["kind"]) for p in problems}
    said = []
    if "job_altered" in kinds:  # a run refuses it: nothing else is fixed before it is
        said.append(f"undo the edit to {Outdir.JOB} (from a backup of OUTDIR, where there is one: "
                    f"colorize keeps none), or start over with `{run_hint(outdir, '--restart')}`")
    if kinds - {"input_missing", "input_changed", "input_unreadable", "job_altered"}:
        what = ("the outputs and results" if kinds & {"damaged_result", "extra_result", "altered_result",
                                                       "missing_result"} else "the outputs")
        said.append(f"fix {what} with `{run_hint(outdir, '--repair')}`")
    changed = [p["source_path"] for p in problems if str(p["kind"]) == "input_changed"]
    if changed:
        which = changed[0] if len(changed) == 1 else "LIST"  # run_hint quotes it
        said.append(f"{plural(len(changed), 'original')} changed since colorized: colour again "
                    f"from them with `{run_hint(outdir, '--redo', which)}`"
                    + (" (LIST: a file of their paths; audit.json's input_changed lists them)"
                       if len(changed) > 1 else ""))
    if "input_missing" in kinds:
        said.append("missing originals: put them back where the manifest says (nothing here "
                    "can restore them; their outputs are kept)")
    if "input_unreadable" in kinds:
        said.append("unreadable originals: give this user read permission (or mend the disk), "
                    "then audit again")
    return "; ".join(said)


def cmd_bench(a) -> int:
    import datetime as dt

    from pipeline.bench.bench import bench, bench_plan, machine

    if a.plan:
        r = bench_plan(a.plan)
        return _said(a, f"\n### {dt.date.today().isoformat()}: planning a {r['rows']:,}-row manifest "
                     f"(`colorize run --dry-run`)\nMachine: {machine()}. Command: `colorize bench "
                     f"--plan {a.plan}`.\n\n{r['seconds']:.1f} s wall, client peak RSS "
                     f"{r['client_peak_rss_mb']:.0f} MB. It said: `{r['said']}`\n")
    if a.review or a.preview:
        return _bench_review(a, machine())
    mem = None if a.no_memory else (a.count, a.count * 10)
    bench(count=a.count, width=a.width, height=a.height, size=a.size, batch=a.batch_size,
          device=a.device, checkpoint=a.checkpoint, naive_count=a.naive_count, memory=mem,
          append=a.append, compiled=not a.no_compile)
    return 0


def _bench_review(a, where: str) -> int:
    import datetime as dt

    from pipeline.bench.review import bench_preview, bench_review

    text = ""
    if a.review:
        r = bench_review(a.review)
        text += (f"\n### {dt.date.today().isoformat()}: the review page over a {r['rows']:,}-image run "
                 f"(`colorize bench --review {a.review}`)\nMachine: {where}.\n\nServer start to the "
                 f"first page (100 rows and every filter's count, over loopback): "
                 f"**{r['first_page_s']:.2f} s** (its request alone {r['first_request_s']:.2f} s); "
                 f"a filtered, searched and sorted page, warm: {r['filtered_s'] * 1000:.0f} ms; "
                 f"pages 2, 501, 1000: {r['other_pages_s'] * 1000:.0f} ms (median).\n")
    if a.preview:
        r = bench_preview(a.preview, checkpoint=a.checkpoint)
        how = r["how"]
        text += (f"\n### {dt.date.today().isoformat()}: preview of one hinted {r['side']}-px scan "
                 f"(`colorize bench --preview {a.preview}`)\nMachine: {where}.\n\n{r['points']} "
                 f"hints ({how}), POSTed to the review server's preview worker, JPEG back: median "
                 f"**{r['median_s']:.2f} s**, slowest {r['max_s']:.2f} s over 7 moves of the hints; "
                 f"the worker's first answer (starting it, torch, the weights) {r['first_s']:.1f} s.\n")
    return _said(a, text)


def _said(a, text: str) -> int:
    """A benchmark's paragraph: printed, and appended to --append's file."""
    print(text)
    if a.append:
        with open(a.append, "a") as f:
            f.write(text)
    return 0


# --- parser ------------------------------------------------------------------------------------






# Each subcommand's one-line help (colorize --help) and description (colorize CMD --help).
COMMANDS = {
    "image": (
        "colorize one image (a quick look)",
        "Colorize one image at full resolution: the net runs at SIZE x SIZE, its colour is "
        "upsampled and joined with the image's own lightness.",
    ),
    "train": (
        "train the net on colour photographs",
        "Train the seed net. SRC: a folder or manifest of colour photos, or a job spec "
        "(.toml) whose keys are these flags.",
    ),
    "scan": (
        "list an archive into a manifest (Parquet)",
        "Scan folders (recursively), globs, or CSV/TXT lists of paths into a sorted, sharded "
        "manifest, a row per file (a file named twice, or by a catalogue and a folder, is one "
        "row; copies of a picture under other names stay rows of their own). A CSV's other "
        "columns are carried into the results.",
    ),
    "run": (
        "colorize a manifest into OUTDIR (rerun to resume)",
        "Colorize every image of a manifest on a dask cluster. JOB.toml, anywhere on the line, "
        "may hold these options (keys as the long flags; a flag given wins). Rerunning resumes.",
    ),
    "export": (
        "write the results as CSV, .xlsx or .parquet for the archive's database",
        "One line per image: the catalogue's columns first, in its order and as written, then "
        "the result's (output_record: current, outdated (older catalogue cells, or a sidecar the "
        "last audit --check-inputs found edited) or missing; source_state: gone where "
        "the last scan did not find the original). CSV in UTF-8 with a BOM and the catalogue's "
        "own separator (what Excel opens right), a real workbook for a .xlsx name or --excel, "
        "or one Parquet table for a .parquet name (typed; a repeated header cell by the name "
        "the scan gave it).",
    ),
    "status": (
        "shards and images done, from the results alone",
        "How far a job is (running, interrupted, complete, damaged), its shards and images "
        "done, from OUTDIR's results alone: quick enough for a monitor to call every minute. "
        "Exit 0; 3 when its results are damaged; 2 when OUTDIR is not a job. For the checks of "
        "every output, colorize audit.",
    ),
    "review": (
        "a local web page to accept, reject, annotate and give colour hints to a run's images",
        "Serve a review page over OUTDIR on this machine (loopback only, a random token in the URL "
        "it prints) and open it in the browser. Verdicts, notes and hints are saved as they are "
        "made, in OUTDIR/reviews/; `colorize run -o OUTDIR --hinted` then colours the hinted images "
        "again.",
    ),
    "evaluate": (
        "score a checkpoint on colour photos, beside baselines",
        "Remove the colour of photos, colorize them, and report PSNR, SSIM, ab-MSE and "
        "colourfulness beside the gray and mean-ab baselines. SRC 'wheels' means the photos "
        "inside scikit-image/scikit-learn/matplotlib.",
    ),
    "tune-gain": (
        "choose a checkpoint's chroma gain on the validation split",
        "Colorize the validation photos of a training collection at several chroma gains and "
        "write the checkpoint with the largest gain whose ab-MSE is within 2 % of the best.",
    ),
    "audit": (
        "prove every image is accounted for (exit 1 if not; 3 if a run is unfinished)",
        "Check OUTDIR against its manifest: one result row per manifest row, every ok output "
        "present with its sha256, no unclaimed files, every error explained. Writes "
        "audit.json and audit.html.",
    ),
    "bench": (
        "throughput: net, I/O, pipeline and naive loop, in one run",
        "Generate gray JPEG scans and measure, on the same images: the net alone, I/O alone, "
        "`colorize run` end to end, and the naive per-image loop; then peak RSS for COUNT and"
        " 10 x COUNT small scans.",
    ),
}


class _Defaults(argparse.HelpFormatter):
    """Each flag's default in its help, where it has one worth saying and the help does not."""

    def _get_help_string(self, action):
        h = action.help or ""
        if action.default in (None, False, "", argparse.SUPPRESS) or "default" in h or not action.option_strings:
            return h
        return f"{h} (default: %(default)s)".lstrip()


def _command(sub, name: str, func):
    help_, description = COMMANDS[name]
    s = sub.add_parser(name, help=help_, description=description, formatter_class=_Defaults)
    s.set_defaults(func=func)
    return s


def _net_flags(s, checkpoint: bool = True, out: dict | None = None) -> None:
    """The flags of every command that runs the net outside a job; out: its --out flag's keywords."""
    if checkpoint:
        s.add_argument("--checkpoint", help="weights (.pt); default: the shipped weights")
    if out:
        s.add_argument("--out", **out)
    s.add_argument("--size", type=size_arg, default=256, help="net resolution (multiple of 8)")
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")


def _add_image(sub) -> None:
    from pipeline.worker.imaging import DEFAULT_MAX_PIXELS

    s = _command(sub, "image", cmd_image)
    s.add_argument("input", metavar="IN", help="the scan: any format a job reads")
    s.add_argument("output", metavar="OUT", help="the file to write: .png, .jpg, .tif or .webp")
    _net_flags(s)
    s.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                   help="refuse larger images as decompression bombs")
    s.add_argument("--recolor", action="store_true", help="colorize a colour image too")
    s.add_argument("--hint", action="append", metavar="X,Y,#rrggbb",
                   help="a curator's colour at a point (source pixels; its a*, b* are meant there, "
                   "the lightness stays the scan's); repeatable")
    s.add_argument("--hints", metavar="FILE.json", help="hints as a JSON list of {x, y, color}")
    s.add_argument("--force", action="store_true",
                   help="replace OUT even if colorize did not write it (an earlier output of "
                   "colorize is replaced without it)")


def _add_train(sub) -> None:
    s = _command(sub, "train", cmd_train)
    s.add_argument("src", metavar="SRC", nargs="?", default="")
    add_flags(s, TrainConfig)  # one per TrainConfig field


def _add_scan(sub) -> None:
    from pipeline.worker.imaging import DEFAULT_MAX_PIXELS

    s = _command(sub, "scan", cmd_scan)
    s.add_argument("sources", metavar="SRC", nargs="+")
    s.add_argument("-o", "--output", required=True, metavar="MANIFEST.parquet")
    s.add_argument("--shard-size", type=positive_int, default=None,
                   help="images per shard (default 64; a rescan keeps the manifest's)")
    s.add_argument("--relative", action="store_true",
                   help="store paths relative to the manifest's folder: the job moves with its "
                   "scans (a new disk, a renamed share); without it, the same scans moved are "
                   "other rows, a new job")
    s.add_argument("--fresh", action="store_true",
                   help="write MANIFEST anew even if it exists (by default an existing one is "
                   "extended: its rows, ids and shards kept, new files added)")
    s.add_argument("--extend", metavar="OLD.parquet", default=None,
                   help="keep this earlier manifest's rows as they are and add only new files, "
                   "in new shards: a job run on it continues with just the new scans")
    s.add_argument("--path-column", action="append", default=None, metavar="COLUMN",
                   help="the catalogue column holding each scan's path (default: path); catalogues "
                   "that name it each their own way: repeat it, or 'Datei||File' (each takes the "
                   "first it has; a rescan reuses the manifest's)")
    s.add_argument("--encoding", default=None,
                   help="the catalogue's text encoding (default: UTF-16 where it begins with "
                   "its BOM, else UTF-8, else Windows-1252)")
    s.add_argument("--path-prefix", action="append", default=None, metavar="PREFIX",
                   help="a catalogue's paths that begin with PREFIX, as another machine kept them "
                        "(C:\\Museum\\Scans\\), are read as the rest from the catalogue's own "
                        "folder (repeatable; a rescan reuses the manifest's)")
    s.add_argument("--delimiter", type=delimiter_arg, default=None,
                   help="the catalogue's separator (default: decided by parsing: ; , tab or |)")
    s.add_argument("--report", metavar="MISMATCHES.csv", default=None,
                   help="also list in this CSV, a line each with its kind, every file left out "
                   "or not listed (uncatalogued, not_a_picture, link ...), every row whose file is "
                   "missing, every file listed twice, and what changed since the last scan "
                   "(gone, changed, recatalogued)")
    s.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse larger images as decompression bombs (default {DEFAULT_MAX_PIXELS:,})")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


HINTED_HELP = ("colour again the images whose curator's hints (colorize review) changed since their "
               "output was written; the automatic outputs are kept in automatic/")


def _add_run(sub) -> None:
    s = _command(sub, "run", cmd_run)
    add_flags(s)  # one per JobSpec field
    s.add_argument("--redo", action="append", metavar="ID|PATH|LIST", default=[],
                   help="colorize these images of the job again (repeatable): image ids, source "
                   "paths, or a .txt/.csv list of them; --recolor then applies to them alone")
    s.add_argument("--hinted", action="store_true", help=HINTED_HELP)
    s.add_argument("--redo-column", metavar="COLUMN", default=None,
                   help="the --redo CSV's column to read, matched against ids, paths and the "
                   "catalogue column of that name (e.g. Inventarnummer)")
    s.add_argument("--summary-json", metavar="PATH", help="also write the run's summary as JSON, however it ends (its "
                   "outcome, this run's counts, the job's): for a monitor; the README lists the outcomes")
    # the spec is taken off the line before argparse sees it (main): named in the usage by hand
    s.usage = s.format_usage().removeprefix("usage: ").replace("colorize run ", "colorize run [JOB.toml] ", 1)


def _add_export(sub) -> None:
    s = _command(sub, "export", cmd_export)
    s.add_argument("outdir", metavar="OUTDIR")
    s.add_argument("dest", metavar="RESULTS.csv|RESULTS.xlsx|RESULTS.parquet")
    s.add_argument("--excel", action="store_true", help="write an Excel workbook (as does a "
                   ".xlsx name)")
    s.add_argument("--delimiter", type=delimiter_arg, default=None,
                   help="CSV separator (default: the catalogue's own, else comma)")
    s.add_argument("--encoding", default="utf-8-sig",
                   help="CSV encoding (default utf-8-sig: UTF-8 with the BOM Excel needs)")
    s.add_argument("--force", action="store_true", help="replace the file if it exists")
    s.add_argument("-q", "--quiet", action="store_true", help="no 'wrote' line (as the other "
                   "commands' -q in a script; the notes and errors are still said)")


def _add_review(sub) -> None:
    s = _command(sub, "review", cmd_review)
    s.add_argument("outdir", metavar="OUTDIR")
    s.add_argument("--port", type=port_arg, default=0, help="port on 127.0.0.1 (default: a free one)")
    s.add_argument("--no-browser", action="store_true", help="print the URL only")
    s.add_argument("--reviewer", metavar="NAME", help="who the edits are recorded as (default: "
                   "the OS user)")
    s.add_argument("--page-size", type=page_size_arg, default=100, metavar="N",
                   help="images on a page of the grid (default 100)")


def _add_status(sub) -> None:
    s = _command(sub, "status", cmd_status)
    s.add_argument("outdir", metavar="OUTDIR")
    s.add_argument("--json", action="store_true", help="print the status as one JSON object (for "
                   "a monitor: state, shards, images, counts) instead of sentences")


def _add_evaluate(sub) -> None:
    s = _command(sub, "evaluate", cmd_evaluate)
    s.add_argument("src", metavar="SRC", help="colour photos: a folder (searched through), one "
                   "photo, a list of their paths (.txt, .csv, .parquet), a training collection "
                   "(its evaluation split), or 'wheels'")
    _net_flags(s, out=dict(default="out/eval", help="eval.md, eval.parquet and the contact sheet"))
    s.add_argument("--max-side", type=positive_int, default=512, help="photos are scaled to this")
    s.add_argument("--pad", type=count_arg, default=None,
                   help="reflect padding of the net's input (default: the engine's, 16)")
    s.add_argument("--hints", type=_counts, default=(), metavar="N[,N...]",
                   help="also score N seeded simulated curator's hints (e.g. 0,1,3,10,30)")
    s.add_argument("--hint-checkpoint", default=None, metavar="PT",
                   help="the hint-conditioned net to score (default: the installed one; '' for "
                   "none)")
    s.add_argument("--hint-head", default=None, metavar="PT",
                   help="the hint head to score (default: the shipped one; '' for propagation "
                   "alone)")
    s.add_argument("--film", choices=("pan", "ortho", "blue"), default="pan",
                   help="the input's lightness as that film saw the scene (default: the photo's own "
                   "L*; ortho and blue as in old scans: reds dark, blues pale)")
    s.add_argument("--damage", type=unit_arg, default=0.0, metavar="P",
                   help="draw each kind of old-print damage (scratches, specks, foxing, "
                   "vignetting, uneven exposure) on a share P of the scans (0 to 1: 1, every "
                   "scan), seeded; the scores still compare with the clean photo")


def _add_tune_gain(sub) -> None:
    s = _command(sub, "tune-gain", cmd_tune_gain)
    s.add_argument("checkpoint", metavar="CHECKPOINT")
    s.add_argument("collection", metavar="PHOTOS", help="photos held out of the checkpoint's training: "
                   "the OUT/val.txt `colorize train` wrote, or a collection `make train-data` built "
                   "(its validation split); never photos it trained on, nor those it is evaluated on")
    _net_flags(s, checkpoint=False, out=dict(required=True, help="the checkpoint to write"))


def _add_audit(sub) -> None:
    s = _command(sub, "audit", cmd_audit)
    s.add_argument("outdir", metavar="OUTDIR")
    s.add_argument("--quick", action="store_true", help="check existence and size, not sha256")
    s.add_argument("--check-inputs", action="store_true", help="also flag changed source files")
    s.add_argument("--sheet", choices=["sample", "all"], default="sample",
                   help="before/after thumbnails of a sample in audit.html, or of every image in "
                   "audit-sheet-NNN.html pages (default: sample)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _add_bench(sub) -> None:
    s = _command(sub, "bench", cmd_bench)
    s.add_argument("--count", type=positive_int, default=200, help="synthetic scans per row")
    s.add_argument("--width", type=positive_int, default=1600, help="their width in pixels")
    s.add_argument("--height", type=positive_int, default=1200, help="their height in pixels")
    _net_flags(s)
    s.add_argument("--batch-size", type=positive_int, default=8, help="images per net call")
    s.add_argument("--naive-count", type=positive_int, default=20,
                   help="scans through the naive one-at-a-time loop (the baseline)")
    s.add_argument("--no-memory", action="store_true", help="skip the flat-memory comparison")
    s.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    s.add_argument("--plan", type=positive_int, default=0, metavar="ROWS",
                   help="instead: time a dry run over a synthetic manifest of ROWS rows")
    s.add_argument("--review", type=positive_int, default=0, metavar="ROWS",
                   help="time the review page's first page over a synthetic run of ROWS images")
    s.add_argument("--preview", type=positive_int, default=0, metavar="SIDE",
                   help="time the review page's preview of one hinted SIDE x SIDE scan")
    s.add_argument("--append", metavar="BENCHMARKS.md", help="append the table to this file")


def build_parser() -> Parser:
    from pipeline import __version__
    from pipeline.client.state import OUTPUT_VERSION  # --version: the jobs it continues are of it

    p = Parser(prog="colorize", description="Colorize archives of black-and-white photographs.")
    p.add_argument("--version", action="version",
                   version=f"colorize (archive-colorizer) {__version__}, output version {OUTPUT_VERSION}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for add in (_add_image, _add_train, _add_scan, _add_run, _add_export, _add_status, _add_evaluate,
                _add_tune_gain, _add_audit, _add_review, _add_bench):
        add(sub)
    return p


def named_on_the_line(parser: Parser, argv: list[str]) -> set[str]:
    """The options the user named (their dests), as argparse itself read the line: abbreviations
    (--batch, --for) and --flag=value included. Parsed again with every default suppressed, so
    what comes back is exactly what was given."""
    sub = parser._subparsers._group_actions[0].choices.get(argv[0]) if argv else None
    if sub is None:
        return set()
    saved, saved_defaults = {a: a.default for a in sub._actions}, sub._defaults
    try:
        sub._defaults = {}
        for a in sub._actions:
            a.default = argparse.SUPPRESS
        ns, _ = sub.parse_known_args(argv[1:])
    finally:
        sub._defaults = saved_defaults
        for a, d in saved.items():
            a.default = d
    return set(vars(ns))


SIGPIPE_EXIT = 141  # as a shell's own tools end when the reader leaves (128 + SIGPIPE)


def stdout_closed(failed: bool = False) -> bool:
    """Whether the reader of our output left before all of it was written (`colorize audit OUT |
    head -1`): a silent end, as `cat` has, not an error; what is still buffered goes nowhere, not
    to a traceback at exit. failed: a write has raised BrokenPipeError, and the pipe is asked
    whether it was stdout's (the failed write dropped what it held: a flush alone would not
    tell). Output all written before the reader left is no failure: the command's code stands."""
    import select

    try:
        fd = sys.stdout.fileno()
        gone = False
        if failed:  # a pipe whose reader has closed polls as an error for its writer
            poll = select.poll()
            poll.register(fd, select.POLLOUT)
            gone = any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poll.poll(0))
        if not gone:
            sys.stdout.flush()
    except BrokenPipeError:
        gone = True
    except (OSError, ValueError, AttributeError):  # no real stdout (a test's capture, closed)
        return False
    if gone:
        os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    return gone


def main(argv: list[str] | None = None) -> int:
    from pipeline.errors import RunFailed
    from pipeline.worker.imaging import DecodeError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    parser.command, parser.argv = (argv[0] if argv else None), argv
    for sub in parser._subparsers._group_actions[0].choices.values():
        sub.argv = argv  # (a command's own errors are raised by its parser)
    try:
        # `colorize CMD [flags] JOB.toml [flags]`: the spec's keys become defaults, flags win.
        given: set[str] = set()
        toml = next((t for t in argv[1:] if t.endswith(".toml") and not t.startswith("-")), None)
        if argv and argv[0] in ("run", "train") and toml:
            sub = parser._subparsers._group_actions[0].choices[argv[0]]
            spec = load_toml(toml)
            apply_job_spec(sub, spec, toml)
            given |= {k.replace("-", "_") for k in spec}
            argv = [t for t in argv if t is not toml]
        a = parser.parse_args(argv)
        a.given = given | named_on_the_line(parser, argv)  # on the line or in the spec
        _outdir_whole(a)
        if not getattr(a, "func", None):
            parser.print_help()
            return 2
        return a.func(a) or 0
    except UsageError as e:
        print(f"colorize: error: {plain(str(e))}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except RunFailed as e:
        if e.traceback:
            print(e.traceback, file=sys.stderr)
        print(f"colorize: failed: {plain(str(e))}", file=sys.stderr)
        return 1
    except (DecodeError, FileNotFoundError) as e:
        print(f"colorize: error: {plain(str(e))}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        if not stdout_closed(failed=True):
            raise  # another pipe: a bug's, with its traceback
        return SIGPIPE_EXIT
    except OSError as e:  # an OUTDIR that cannot be created, a full disk at the start...
        print(f"colorize: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("colorize: interrupted", file=sys.stderr)
        a = locals().get("a")
        if getattr(a, "func", None) is cmd_run and a.output:
            try:
                from pipeline.client.orchestrate import status

                s = status(a.output)
                print(f"colorize: {_committed_said(s)}; resume with: colorize run -o "
                      f"{shlex.quote(a.output)}", file=sys.stderr)
            except Exception:  # the summary is a courtesy; the interruption stands
                pass
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
