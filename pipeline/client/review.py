"""`colorize review OUTDIR`: a local web page over a run, where a curator accepts, rejects and
annotates each image and gives colour hints (issue 25).

Safe by default: it listens on loopback only; every request must carry the random token of the
URL it prints; it never takes a path from a request (images are named by image id and found
through the run's own results and manifest; an output that resolves outside OUTDIR, through a
symlink or otherwise, is refused); it writes only under OUTDIR/reviews/ (the journal, and a
cache of thumbnails); it takes no lock, so it works beside a running `colorize run`.

Flask (with werkzeug's threaded server) does the routing, request parsing, static files and
the test client: code we would otherwise write. The page is plain HTML and JavaScript
(review_page/), nothing to build."""

from __future__ import annotations

import hashlib
import html
import io
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from pipeline.client import reviews
from pipeline.client.outdir import Outdir, automatic_of
from pipeline.client.runview import FILTERS, PAGE, RunView
from pipeline.client.state import HINT_CHECKPOINT, job_checkpoint
from pipeline.errors import CheckpointError, JobError, UsageError
from pipeline.storage import readable_by_all

PAGE_DIR = Path(__file__).with_name("review_page")
THUMB = 320
# A master decodes whole (a 100-MP TIFF: ~0.5 GB with its bytes) and a grid asks for many at
# once: two at a time keeps the server's memory to a couple of masters, and two cores busy.
DECODING = threading.BoundedSemaphore(2)
CACHE = "cache"


class Previewer:
    """The preview worker process (worker/preview.py): started when the first image is opened
    in the image view, or on the first preview, and again if it dies."""

    def __init__(self, checkpoint: str | None, size: int = 256):
        self.checkpoint, self.size = checkpoint, size  # the job's: the preview is what its run makes
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str], str] = {}  # what made each preview's hints colour

    MODELS_KEPT = 10_000

    def model_of(self, path: str, hints_digest: str | None) -> str | None:
        """The hint model that made the colour of this source's preview with hints of this
        digest, as the worker said; None where none was shown (a verdict then names no model)."""
        return self._models.get((path, hints_digest)) if hints_digest else None

    def render(self, path: str, hint_list: list, max_side: int = 1024) -> bytes:
        req = json.dumps({"path": path, "hints": hint_list, "max_side": max_side}).encode() + b"\n"
        with self._lock:
            try:
                head = self._ask(req)
            except (BrokenPipeError, ValueError):  # it died (killed, out of memory): once more
                self._proc = None
                try:
                    head = self._ask(req)
                except (BrokenPipeError, ValueError):
                    self._proc = None
                    raise RuntimeError("the preview worker stopped") from None
            if not head["ok"]:
                raise ValueError(head["error"])
            data = self._proc.stdout.read(head["bytes"])
            if head.get("hint_model") and (d := _digest(hint_list)):
                if len(self._models) >= self.MODELS_KEPT:
                    self._models.pop(next(iter(self._models)))  # the oldest
                self._models[(path, d)] = head["hint_model"]
            return data

    def start(self) -> None:
        """Start the worker now: torch and the weights take seconds to load, which the curator's
        first preview would otherwise wait for."""
        with self._lock:
            self._started()

    def warm(self) -> None:
        """start(), as an image is opened: seconds before a hint can be placed on it, not with
        the server (a review in the grid alone never loads torch: the worker holds ~600 MB and
        took 3.5 s of a core to start, for nothing there). Not while a preview holds the worker
        (it is started then): an image's answer does not wait for another's preview."""
        if self._lock.acquire(blocking=False):
            try:
                self._started()
            finally:
                self._lock.release()

    def _started(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline.worker.preview", self.checkpoint or "", str(self.size)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                # not in the terminal's process group: Ctrl-C stops the server, which closes the
                # worker's stdin, and the worker ends there (a kill -9 of the server alike)
                start_new_session=True)
        return self._proc

    def _ask(self, req: bytes) -> dict:
        self._started()
        self._proc.stdin.write(req)
        self._proc.stdin.flush()
        return json.loads(self._proc.stdout.readline())

    STOP_WAIT = 10.0  # seconds

    def close(self) -> None:
        """The worker ends when its stdin closes, which it reads once torch and the weights are
        loaded: a server stopped while it still loads (a loaded machine) ended it with a
        traceback, the journal left open. Waited for a while, then killed."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=self.STOP_WAIT)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def create_app(outdir: str, who: str | None = None, token: str | None = None, per_page: int = PAGE):
    """The review server's Flask app over OUTDIR (app.config["TOKEN"] holds its token)."""
    from flask import Flask, Response, request, send_from_directory

    od = Outdir(outdir)
    if not od.has_job():
        raise UsageError(f"{outdir} holds no job (no job.json): review a folder `colorize run` wrote")
    root = os.path.realpath(outdir)
    if os.path.islink(folder := os.path.join(root, reviews.DIR)):
        raise UsageError(f"{folder} is a link (to {os.readlink(folder)}): the review writes only "
                         "inside OUTDIR; make it a folder of its own (move what it holds into it)")
    view = RunView(od, per_page)
    journal = reviews.Journal(root, who)
    journal.compact()
    spec = od.read_job()["spec"]
    try:  # the shipped weights of the install that began the job, where that install is gone
        checkpoint = job_checkpoint(spec)
    except CheckpointError:  # gone, and not these: each preview says so, the review goes on
        checkpoint = spec.get("checkpoint")
    previewer = Previewer(checkpoint, int(spec.get("size") or 256))
    app = Flask(__name__, static_folder=None)
    app.json.sort_keys = False  # a catalogue's columns in its own order (the page labels by the first)
    app.config.update(TOKEN=token or secrets.token_urlsafe(24), JOURNAL=journal, PREVIEWER=previewer)

    @app.before_request
    def _token():
        if _host_name(request.host) not in LOOPBACK_NAMES:
            # a page elsewhere whose name was made to point at 127.0.0.1 (DNS rebinding) is
            # answered nothing: the browser sends its own name as the Host
            return Response("This review server answers only at 127.0.0.1 or localhost.\n", 403,
                            mimetype="text/plain")
        if request.path.startswith("/page/"):
            return None  # the page's own stylesheet and script: code, no data of the run
        # in the URL or a header, never a cookie: a browser sends a cookie of 127.0.0.1 to every
        # port of it (another local server would be handed the key, and a page there could post
        # edits with it), and a second review server's would replace the first's
        given = request.args.get("t") or request.headers.get("X-Token")
        if not given or not secrets.compare_digest(given.encode(), app.config["TOKEN"].encode()):
            return Response("This review page opens only from the whole link that `colorize "
                            "review` printed (it ends in ?t=...): copy all of it. Each start of "
                            "colorize review prints a new link; a link from an earlier start "
                            "opens nothing.\n", 403, mimetype="text/plain")
        return None

    @app.errorhandler(JobError)
    def _job_error(e):  # a results file damaged since the page opened: said, not a traceback
        return Response(f"{e}\n", 409, mimetype="text/plain")

    @app.after_request
    def _headers(resp):
        resp.headers["X-Content-Type-Options"] = "nosniff"
        # the page's own script and images only: text from a file (a catalogue cell, a journal)
        # that slipped into markup runs nothing, and sends nothing elsewhere
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
        resp.headers["Referrer-Policy"] = "no-referrer"
        return resp

    @app.get("/")
    def index():
        return send_from_directory(PAGE_DIR, "index.html", max_age=0)

    @app.get("/page/<path:name>")
    def page_file(name):
        return send_from_directory(PAGE_DIR, name, max_age=0)  # safe_join: nothing outside it

    _routes(app, root, view, journal, previewer)
    return app


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def _host_name(host: str) -> str:
    """A Host header's name without its port ("[::1]:8765" -> "[::1]")."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0].lower()


def _not_an_object():
    from flask import jsonify

    return jsonify(error="expected a JSON object"), 400


def _routes(app, root: str, view: RunView, journal: reviews.Journal, previewer: Previewer) -> None:
    """The page's API: the grid, one image, edits, previews, pictures, the output's palette."""
    from flask import abort, jsonify, request

    def _row(image_id: str) -> dict:
        r = view.row(image_id)
        if r is None:
            abort(404)
        return r

    @app.get("/api/info")
    def info():
        return jsonify(outdir=root, columns=view.columns(), filters=FILTERS, reviewer=journal.who,
                       hint_net=HINT_CHECKPOINT.is_file())

    @app.get("/api/images")
    def images():
        a = request.args
        return jsonify(view.page(journal.state(), filter=a.get("filter", "all"),
                                 column=a.get("column") or None, value=a.get("value"),
                                 sort=a.get("sort") or None, desc=a.get("desc") == "1",
                                 q=a.get("q") or None, page=_number(a.get("page"))))

    @app.get("/api/values")
    def values():
        return jsonify(values=view.values(request.args.get("column") or ""))

    @app.get("/api/image/<image_id>")
    def image(image_id):
        previewer.warm()  # the first image opened starts the preview worker (not the server)
        return jsonify(_image_info(root, view, _row(image_id), journal.state().get(image_id, {})))

    @app.post("/api/review")
    def review():
        body = request.get_json(force=True, silent=True) or {}
        if not isinstance(body, dict):
            return _not_an_object()
        answer, code = _save(view, journal, body, previewer)
        return jsonify(answer), code

    @app.post("/api/preview/<image_id>")
    def preview(image_id):
        _row(image_id)
        if not isinstance(body := request.get_json(force=True, silent=True) or {}, dict):
            return _not_an_object()
        side = body.get("max_side", 1024)
        if isinstance(side, bool) or not isinstance(side, int) or not 16 <= side <= 8192:
            return jsonify(error=f"max_side is a whole number of pixels, 16 to 8192: {side!r}"), 400
        try:
            data = previewer.render(view.source(image_id), body.get("hints") or [], side)
        except (ValueError, RuntimeError) as e:
            return jsonify(error=str(e)), 422
        return app.response_class(data, mimetype="image/jpeg")

    @app.get("/img/<image_id>/<which>")
    def picture(image_id, which):
        if which not in ("source", "output", "automatic"):
            abort(404)
        r = _row(image_id)
        data = _picture(root, view, r, which, _number(request.args.get("w")))
        if data is None:
            abort(404)
        return app.response_class(data, mimetype="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.get("/api/colours/<image_id>")
    def colours(image_id):
        data = _picture(root, view, _row(image_id), "output", 256)
        return jsonify(colours=[] if data is None else _palette(data))



def _image_info(root: str, view: RunView, row: dict, review: dict) -> dict:
    """An image's result row, catalogue cells and review, and whether its saved hints are not
    those its output was made with (the page then previews them instead of the old output)."""
    from pipeline.worker.hints import digest_of

    return {"row": dict(row), "catalogue": view.catalogue(row),
            "review": review or {"verdict": None, "note": None, "hints": [], "rev": {}},
            "hints_pending": digest_of(review.get("hints") or []) != row.get("hints_digest"),
            "verdict_earlier": reviews.earlier(review or {}, row),
            "automatic": _automatic(root, row) is not None}


def _opener(url: str, folder: str) -> str:
    """A file that sends the browser on to url, readable by this user alone: the browser is
    started with its name on its command line, which every user of the machine can read in the
    process list, so the key must not be on it (as Jupyter opens its page)."""
    path = os.path.join(folder, "open.html")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f'<!doctype html><meta http-equiv="refresh" content="0;url={html.escape(url)}">'
                f'<a href="{html.escape(url)}">open the review page</a>\n')
    return Path(path).as_uri()


def _ours(root: str, rel: str) -> str | None:
    """The real path of an output (images/... or automatic/...) where it lies inside its folder
    as that folder really is: images/ may be a link to another disk (the README allows it), but
    nothing below it may lead out of it (a planted link, a hostile row)."""
    top, _, rest = rel.partition("/")
    if top not in (Outdir.IMAGES, Outdir.AUTOMATIC) or not rest:
        return None
    base = os.path.realpath(os.path.join(root, top))
    path = os.path.realpath(os.path.join(base, rest))
    return path if path.startswith(base + os.sep) else None


def _automatic(root: str, row: dict) -> str | None:
    """The automatic output a hinted one replaced (OUTDIR/automatic/, kept by `run --hinted`),
    for the curator to compare the hints' colour with; None when there is none."""
    rel = row.get("output_path") or ""
    if not row.get("hints_digest") or "/" not in rel:
        return None
    path = _ours(root, automatic_of(rel))
    return path if path and os.path.isfile(path) else None


def _edits(view: RunView, body: dict) -> list[tuple[str, object]] | None:
    """(image id, value) for each image an edit names, hints applied to a series fitted to each
    image (_fitted); None when it names no image or one the run does not hold."""
    ids = body.get("ids") or ([body["image_id"]] if body.get("image_id") else [])
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return None
    rows = {i: view.row(i) for i in ids}
    if not ids or None in rows.values():
        return None
    if not isinstance(body.get("from") or "", str):
        return None
    source = view.row(body["from"]) if body.get("kind") == "hints" and body.get("from") else None
    return [(i, _fitted(body.get("value"), source, rows[i])) for i in ids]


def _save(view: RunView, journal: reviews.Journal, body: dict, previewer: Previewer) -> tuple[dict, int]:
    """An edit (one image's, or a series'), checked, then journalled: (answer, HTTP status)."""
    edits = _edits(view, body)
    if edits is None:
        return {"error": "unknown image id"}, 404
    left_out = {}
    if body.get("kind") == "hints":
        outside, left_out = _unhintable(view, edits)
        if outside:
            return {"error": outside}, 400
        # an image the run could not read has no picture to hint: refused alone; left out of a
        # series (a range selected over a page of cards takes an error card in with the rest)
        if left_out and (not isinstance(body.get("ids"), list) or len(left_out) == len(edits)):
            return {"error": next(iter(left_out.values()))}, 400
        edits = [(i, v) for i, v in edits if i not in left_out]
    with journal.exclusive():  # the check of what the edit was made on, and the edit, as one
        # (another curator's server too: its edit since is seen, not overwritten)
        if (stale := _stale(journal, body)) is not None:
            stale["verdict_earlier"] = reviews.earlier(journal.state().get(body["image_id"]) or {},
                                                       view.row(body["image_id"]) or {})
            return {"error": "changed in another tab or by another curator since this page "
                    "showed it: not saved", "current": stale}, 409
        edits, before = _added(journal, body, edits)
        if body.get("kind") == "verdict":
            if any(v is not None and not isinstance(v, str) for _, v in edits):  # "of" is ours to say
                return {"error": f"verdict must be one of {', '.join(reviews.VERDICTS)} or null"}, 400
            edits = _judged(view, journal, edits, previewer, body.get("restore") if body.get("undo") else None)
        try:
            evs = [journal.record(i, body.get("kind"), value) for i, value in edits]
        except reviews.ReviewError as e:
            return {"error": str(e)}, 400
    answer = {"saved": len(evs), "ids": [i for i, _ in edits], "events": [e["id"] for e in evs],
              "before": before, "left_out": left_out}
    if body.get("kind") == "verdict":  # an undo's verdict put back may be one on an earlier colouring
        state = journal.state()
        answer["earlier"] = [reviews.earlier(state.get(i) or {}, view.row(i)) for i, _ in edits]
    return answer, 200


def _stale(journal: reviews.Journal, body: dict) -> dict | None:
    """An edit of one image that names the edit it was made on ("base": the event id of that
    kind the page showed, null for none) and finds another since: the image's state now, for
    the page to show instead (two tabs, two curators: neither overwrites the other unseen).
    None when the edit may go ahead; one without a base goes ahead too (a series adds beside
    each image's hints, never over them; an undo names its own page's last edit of that kind)."""
    if "base" not in body or not body.get("image_id") or not isinstance(body["image_id"], str):
        return None
    s = journal.state().get(body["image_id"]) or {}
    if (s.get("rev") or {}).get(body.get("kind")) == body["base"]:
        return None
    return {k: s.get(k) for k in ("verdict", "note", "hints", "who", "t", "rev", "by")}


def _added(journal: reviews.Journal, body: dict, edits: list[tuple[str, object]]):
    """(edits, each image's hints before them): a series' hints ("add") go beside each image's
    own, never over them; `before` is what undo sends back."""
    state = journal.state()
    before = {i: (state.get(i) or {}).get("hints") or [] for i, _ in edits}
    if body.get("kind") == "hints" and body.get("add") and all(isinstance(v, list) for _, v in edits):
        edits = [(i, before[i] + [h for h in v if h not in before[i]]) for i, v in edits]
    return edits, before


def _judged(view: RunView, journal: reviews.Journal, edits: list[tuple[str, object]], previewer: Previewer,
            restore=None):
    """Verdicts bound to the colouring the curator saw (reviews.colouring): the output as the
    run made it, or the preview of hints saved since, which their run makes; with the hint model
    that made the hints colour, where known (the run's; the preview's this server made). An undo
    names the verdict edit it puts back (`restore`): that one as it was, with what it was given to."""
    from pipeline.worker.hints import digest_of

    state = journal.state()

    def given(i: str, v: str) -> dict:
        row, d = view.row(i), digest_of((state.get(i) or {}).get("hints"))
        model = row.get("hint_model") if d and d == row.get("hints_digest") else previewer.model_of(view.source(i), d)
        return {"verdict": v, "of": reviews.colouring(row, d)} | ({"hint_model": model} if model else {})

    edits = [(i, given(i, v) if v in reviews.VERDICTS else v) for i, v in edits]
    if restore and isinstance(restore, str) and len(edits) == 1 and isinstance(edits[0][1], dict):
        i, v = edits[0]
        was = next((reviews.value_of(e) for e in journal.events() if e["id"] == restore
                    and e["image_id"] == i and e["kind"] == "verdict"), None)
        if (was.get("verdict") if isinstance(was, dict) else was) == v["verdict"]:
            edits = [(i, was)]
    return edits


def _digest(hint_list) -> str | None:
    """The digest of hints as a page sends them, or None where they are not hints at all."""
    from pipeline.worker.hints import HintError, digest_of

    try:
        return digest_of(reviews.check_value("hints", hint_list))
    except (HintError, reviews.ReviewError):
        return None


def _number(text: str | None) -> int:
    """A width or a page number from a query: a 400, not a server error, when it is not one."""
    from flask import abort

    if not ((text or "0").isascii() and (text or "0").isdigit()):  # "²" is a digit to isdigit
        abort(400, description=f"expected a whole number, got {text!r}")
    return int(text or "0")


def _unhintable(view: RunView, edits: list[tuple[str, object]]) -> tuple[str | None, dict[str, str]]:
    """Why these hints cannot be kept: (a hint outside its image, hints being in the scan's
    pixels; the images with no picture to place them on, each with why: a file the run could not
    read, whose redo fails again and whose row would say it was hinted). Taking hints away is
    always kept."""
    from pipeline.worker import hints

    pictureless = {}
    for image_id, value in edits:
        r = view.row(image_id)
        w, h = r.get("width"), r.get("height")
        try:
            given = hints.from_json(value)
        except hints.HintError:
            continue  # not hints at all: the journal says why
        if given and not (w and h):
            pictureless[image_id] = (f"{r.get('source_path') or image_id} has no picture to place hints "
                                     f"on (its run said: {r.get('error') or r.get('status')}): mend or "
                                     "replace the file, then colorize run --redo it")
        elif given and (far := hints.outside(given, w, h)):
            return f"a hint at {far[0]} is outside the {w}x{h} image {image_id}", {}
    return None, pictureless


def _fitted(hint_list, source: dict | None, target: dict):
    """Hints placed on one image (source), for another of a series: at the same place relative to
    its size (a series' scans differ by a few pixels or by their resolution). No source, or sizes
    unknown: as placed."""
    if source is None or not isinstance(hint_list, list):
        return hint_list
    try:
        sx, sy = target["width"] / source["width"], target["height"] / source["height"]
    except (KeyError, TypeError, ZeroDivisionError):
        return hint_list
    return [{**h, "x": h["x"] * sx, "y": h["y"] * sy}
            if isinstance(h, dict) and isinstance(h.get("x"), (int, float)) and isinstance(h.get("y"), (int, float))
            else h for h in hint_list]


def _picture(root: str, view: RunView, row: dict, which: str, width: int) -> bytes | None:
    """A browser-viewable JPEG of an image's source, output or the automatic output a hinted one
    replaced (any format, 16-bit too), scaled
    to `width` (0: full size), cached under reviews/cache by content digest."""
    from pipeline.worker.imaging import DEFAULT_MAX_PIXELS

    if which == "automatic":
        if (path := _automatic(root, row)) is None:
            return None
        key = f"{path}:{os.stat(path).st_mtime_ns}"
    elif which == "output":
        rel = row.get("output_path")
        if not rel or row.get("status") != "ok":
            return None
        path = _ours(root, rel)
        if path is None:  # a link out of images/ or a hostile row: not ours to show
            return None
        key = row.get("output_sha256") or rel
    else:
        path = view.source(row["image_id"])
        key = row.get("source_sha256") or path
    # a scan skipped as a colour image is shown in its colour: whether it is a toned print
    # after all (to hint and colour again) is what the curator judges by it; a toned print's
    # before too, as it is: the tone the colour replaced is what the curator compares
    colour = which == "source" and (row.get("status") == "skipped" or row.get("input_kind") in ("toned", "color"))
    name = hashlib.sha256(f"{which}:{colour}:{key}:{width}".encode()).hexdigest()[:24] + ".jpg"
    cache = Path(root) / reviews.DIR / CACHE
    # reviews/ is writable by every curator: a cache (or an entry) that is a link is not read
    # through (it served a text file as a picture) nor written through (outside OUTDIR)
    cache_ok = not cache.is_symlink() and not cache.parent.is_symlink()
    if cache_ok and _own_file(cache / name):
        try:
            return (cache / name).read_bytes()
        except OSError:  # gone meanwhile: made again
            pass
    limit = view.max_pixels or DEFAULT_MAX_PIXELS
    with DECODING:
        data = _jpeg(path, which, colour, width, limit)
    try:
        if data is None or not cache_ok:
            return data
        cache.mkdir(parents=True, exist_ok=True)
        readable_by_all(cache)
        tmp = cache / f".{name}.{os.getpid()}.{threading.get_ident()}"
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
            readable_by_all(f.fileno())  # every curator's
            f.write(data)  # O_EXCL: never through a link planted under its name
        os.replace(tmp, cache / name)
    except OSError:
        pass  # a full disk costs the cache, not the page
    return data


def _own_file(p: Path) -> bool:
    """A cache entry this user wrote (a plain file, no link): its name is a digest anyone can
    work out, so an entry planted by another (a picture that is not the output) is not shown,
    but made again."""
    try:
        st = os.lstat(p)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid()


def _jpeg(path: str, which: str, colour: bool, width: int, limit: int) -> bytes | None:
    """The picture as a JPEG `width` wide (0: as large as it is); None when it cannot be read."""
    from PIL import Image, ImageOps

    from pipeline.storage import read_source
    from pipeline.worker.imaging import decode, open_within

    try:
        raw = read_source(path) if which == "source" else Path(path).read_bytes()
        if which == "source" and not colour:
            d = decode(io.BytesIO(raw), limit, preview=width)  # a JPEG at 1/2-1/8 where enough
            im = Image.fromarray(d.gray if d.gray.dtype.itemsize == 1 else (d.gray >> 8).astype("uint8"), "L")
        else:  # ours: its size was checked when its source was read
            im = open_within(raw, limit if colour else None)
            if width and im.width > width:  # a JPEG decodes at 1/2-1/8 of its size where that
                im.draft(None, (width, width))  # is enough, turned by its EXIF or not
            if colour:
                im = ImageOps.exif_transpose(im)
            im = im.convert("RGB") if im.mode != "I;16" else im.point(lambda v: v / 256).convert("RGB")
        del raw
        if width and im.width > width:
            im = im.resize((width, max(1, round(im.height * width / im.width))), Image.BILINEAR,
                           reducing_gap=3.0)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=88)
        return buf.getvalue()
    except Exception:
        return None


def _palette(jpeg: bytes, n: int = 8) -> list[str]:
    """The output's own main colours (median cut), most common first, as #rrggbb."""
    from PIL import Image

    im = Image.open(io.BytesIO(jpeg)).convert("RGB").quantize(n)
    pal = im.getpalette()[: 3 * n]
    order = sorted(im.getcolors(), reverse=True)
    return ["#" + bytes(pal[3 * i:3 * i + 3]).hex() for _, i in order]


# a request line's control characters as escapes (http.server has its own table only since 3.10.9)
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def _handler():
    """Werkzeug's request log without the token: its lines end up in scrollback and nohup.out,
    and the token is the page's only key."""
    import re

    from werkzeug.serving import WSGIRequestHandler

    secret = re.compile(r"([?&]t=)[^&\s\"]+")

    class Handler(WSGIRequestHandler):
        def log_request(self, code="-", size="-"):  # a line per thumbnail buried the curator's
            if str(code)[:1] in "45":  # terminal: a failed request alone is worth a line, with
                self.log("info", '"%s" %s %s', self.requestline.translate(_CONTROLS),
                         code, size)  # no colour codes; a request's escape codes shown, not run

        def log(self, type, message, *args):
            super().log(type, message, *(secret.sub(r"\1…", a) if isinstance(a, str) else a
                                         for a in args))

    return Handler


def serve(outdir: str, port: int = 0, browser: bool = True, who: str | None = None, log=print,
          per_page: int = PAGE) -> None:
    """Runs the review server until Ctrl-C; prints its URL (with the token)."""
    from werkzeug.serving import make_server

    app = create_app(outdir, who, per_page=per_page)
    import socket

    try:  # bound here: werkzeug would print its own advice and exit 1 on a taken port
        sock = socket.create_server(("127.0.0.1", port))
    except OSError as e:
        raise UsageError(f"cannot listen on 127.0.0.1:{port}: {e.strerror or e}; pick another "
                         "--port (or leave it out: a free one is chosen)") from None
    srv = make_server("127.0.0.1", sock.getsockname()[1], app, threaded=True, fd=sock.fileno(),
                      request_handler=_handler())
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/?t={app.config['TOKEN']}"
    private = tempfile.mkdtemp(prefix="colorize-review-") if browser else None  # 0700: this user's alone
    log(f"review {outdir} at {url}  (Ctrl-C stops; edits are saved as they are made)")
    sys.stdout.flush()  # a script's log (nohup, systemd, a pipe) gets the link now, not at exit

    def stop(signum, frame):  # a service manager's stop: as Ctrl-C, tidied up behind it
        raise KeyboardInterrupt

    import signal

    signal.signal(signal.SIGTERM, stop)
    try:
        if browser:
            import webbrowser

            threading.Timer(0.5, webbrowser.open, (_opener(url, private),)).start()
            # read by then; a server killed outright leaves no key behind it for long either
            tidy = threading.Timer(60, shutil.rmtree, (private, True))
            tidy.daemon = True  # not a reason to stay up after Ctrl-C
            tidy.start()
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if private:
            shutil.rmtree(private, ignore_errors=True)
        srv.server_close()
        app.config["PREVIEWER"].close()
        app.config["JOURNAL"].close()
