// The review page: a grid of a run's images, an image view, verdicts, notes and colour hints.
// Every edit is sent to the server at once and shown as saved only when the server has it on disk.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("t");
const S = {
  filter: "all", column: "", value: "", sort: "", desc: false, q: "", page: 0,
  rows: [], cur: 0, selected: new Set(), view: false, hintMode: false, slider: false,
  review: null, row: null, automatic: false, compare: false, hints: [], curHint: -1, undo: [], recent: [], previewTimer: null, previewGen: 0, viewGen: 0,
  saving: Promise.resolve(), broken: new Set(), gridScroll: 0, names: {},
};
const nameOf = (id) => S.names[id] || id;
// an image's review as its card knows it (the grid's verdicts; the view until its answer comes)
const reviewOf = (r) => ({ verdict: r.verdict, note: r.note, hints: [], image_id: r.image_id, rev: { ...(r.rev || {}) } });
const $ = (id) => document.getElementById(id);
// Text put into HTML: a value from a file (a journal, a results row) is never markup.
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function api(path, opts = {}) {
  const sep = path.includes("?") ? "&" : "?";
  return fetch(path + sep + "t=" + encodeURIComponent(TOKEN), opts);
}
async function getJSON(path) {
  const r = await api(path);
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}
// What the page says of an edit: beside the verdict in the image view, in the header always.
function say(text, routine = text === "saving…" || text.endsWith(" saved")) {
  // a refusal is not hidden at once by the next edit's "saved" (keys pressed on in the grid): it
  // stays first, the next edit's word after it
  if (routine && Date.now() < (S.refusalShown || 0)) text = `${S.refusalText} — then: ${text}`;
  else if (text.startsWith("NOT")) { S.refusalShown = Date.now() + 8000; S.refusalText = text; }
  clearTimeout(S.sayTimer);  // "saved" fades after a while, so it never speaks of an old edit;
  if (!text.startsWith("NOT")) S.sayTimer = setTimeout(() => { $("status").textContent = $("status").title = ""; }, 8000);
  $("status").textContent = text;  // a refusal stays until the next message
  $("status").title = text;
  $("status").classList.toggle("bad", text.startsWith("NOT"));
  if (S.view) { $("saved").textContent = text; $("saved").classList.toggle("bad", text.startsWith("NOT")); }
}
// v: which bytes the picture is of, so that an output a run remade is asked for anew (a browser
// does not load a URL it already shows again)
const img = (r, which, w) => `/img/${encodeURIComponent(r.image_id)}/${which}?w=${w}&v=` +
  `${((which === "source" ? r.source_sha256 : r.output_sha256) || "").slice(0, 12)}&t=${encodeURIComponent(TOKEN)}`;
// The image view asks for a screenful (a 100-MP master is ~30 MB as a JPEG, and slow to make);
// zoomed to 1:1 it asks for the picture as large as it is (w=0).
const SCREEN = 2560;
const viewW = () => (document.body.classList.contains("zoom") ? 0 : SCREEN);
function sharpen() {
  for (const id of ["before", "after", "slider-before", "slider-after"]) {
    const im = $(id);
    if (im.src.includes(`?w=${SCREEN}&`)) im.src = im.src.replace(`?w=${SCREEN}&`, "?w=0&");
  }
}

// --- colour: sRGB <-> CIE Lab (D65), the same constants as scikit-image and the engine ---------
function srgbToLab(hex) {
  const c = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255)
    .map((v) => (v > 0.04045 ? ((v + 0.055) / 1.055) ** 2.4 : v / 12.92));
  const X = (0.412453 * c[0] + 0.357580 * c[1] + 0.180423 * c[2]) / 0.95047;
  const Y = 0.212671 * c[0] + 0.715160 * c[1] + 0.072169 * c[2];
  const Z = (0.019334 * c[0] + 0.119193 * c[1] + 0.950227 * c[2]) / 1.08883;
  const f = (t) => (t > 0.008856 ? Math.cbrt(t) : 7.787 * t + 16 / 116);
  return { L: 116 * f(Y) - 16, a: 500 * (f(X) - f(Y)), b: 200 * (f(Y) - f(Z)) };
}
function labToHex(L, a, b) {
  const fy = (L + 16) / 116, fx = fy + a / 500, fz = fy - b / 200;
  const inv = (t) => (t > 0.2068966 ? t ** 3 : (t - 16 / 116) / 7.787);
  const X = inv(fx) * 0.95047, Y = inv(fy), Z = inv(fz) * 1.08883;
  const lin = [3.240481 * X - 1.537151 * Y - 0.498536 * Z, -0.969255 * X + 1.875990 * Y + 0.041556 * Z,
    0.055647 * X - 0.204041 * Y + 1.057311 * Z];
  return "#" + lin.map((v) => {
    const s = v > 0.0031308 ? 1.055 * Math.max(v, 0) ** (1 / 2.4) - 0.055 : 12.92 * v;
    return Math.round(Math.min(1, Math.max(0, s)) * 255).toString(16).padStart(2, "0");
  }).join("");
}

// --- the grid -----------------------------------------------------------------------------------
async function loadInfo() {
  const info = await getJSON("/api/info");
  $("outdir").textContent = info.outdir + " · reviewer " + info.reviewer;
  S.outdir = info.outdir;
  S.me = info.reviewer;
  for (const c of info.columns) {
    $("column").add(new Option(c, c));
    $("sort").add(new Option(c, c));
  }
  for (const c of ["status", "colorfulness", "width", "height"]) $("sort").add(new Option(c, c));
  S.filters = info.filters;
}

function pageQuery(page = S.page) {
  return "/api/images?" + new URLSearchParams({ filter: S.filter, column: S.column, value: S.value,
    sort: S.sort, desc: S.desc ? "1" : "0", q: S.q, page });
}

// The answers come back in any order: one for a filter, sort or page the curator has since left
// (a slow query on a big archive) would draw the grid under the one now chosen.
// Who waits on an answer left behind waits on the newest (closing an image focuses its card once
// the grid is drawn).
// keep: the current card stays current, found by its image where the rows moved (a verdict
// takes it out of the filter's list)
function loadPage(keep = false) {
  S.loadSeq = (S.loadSeq || 0) + 1;
  return (S.loading = drawPage(S.loadSeq, keep));
}
async function drawPage(seq, keep) {
  const d = await getJSON(pageQuery());
  if (seq !== S.loadSeq) return S.loading;
  if (!d.rows.length && S.page > 0 && S.page >= d.pages) {  // the last page judged empty under a filter
    S.page = d.pages - 1;
    return loadPage();
  }
  // An image open (a filter or a search chosen in the image view): the view walks on (j, k) in
  // the rows it was opened from, as ever; the grid is drawn when it closes. Drawn now, under
  // "not reviewed" the image just judged left the rows under it, and j skipped the one after it.
  if (S.view) { renderFilters(d); return; }
  showPage(d, keep, false);
  writePlace();
}
// keep: the same image stays current where it is still listed (the page drawn again as a run
// commits); a page the curator asked for keeps the place (a verdict given under "not reviewed"
// takes its card away: the next one is current)
// (keep: a list of images, the first still listed is current: the image the view had open, or
// the one after it, where judging it took it out of the filter)
function showPage(d, keep = false, quiet = keep === true) {
  S.pageGen = (S.pageGen || 0) + 1;  // a poll's answer asked for before this is older than it
  const ids = Array.isArray(keep) ? keep : keep && S.rows[S.cur] ? [S.rows[S.cur].image_id] : [];
  // past the list's end (its last image judged out of it), drawn again: still after that card
  const after = keep === true && S.cur >= S.rows.length && S.rows.length ? S.rows[S.rows.length - 1].image_id : null;
  S.rows = d.rows;
  const at = ids.map((i) => S.rows.findIndex((r) => r.image_id === i)).find((k) => k >= 0) ?? -1;
  const past = after === null ? -1 : S.rows.findIndex((r) => r.image_id === after) + 1 || S.rows.length;
  // (a list of images none of which is listed now, the list's last judged in the image view
  // among them: past the end, not on a card skipped with j)
  S.cur = at >= 0 ? at : past >= 0 ? past : ids.length ? Math.min(S.cur, d.rows.length)
    : Math.min(S.cur, Math.max(0, d.rows.length - 1));
  S.pages = d.pages;
  renderFilters(d);
  renderGrid(quiet);
  if (!d.rows.length) $("grid").textContent = "no image matches this filter and search";
}

// Where the curator is (filter, search, sort, page, the image open or the grid's current card)
// lives in the URL's hash, written at each move: a reload, or the URL kept in a bookmark, comes
// back to it (written late, a reload went back a few images, and the keys re-judged them).
function writePlace() {
  const p = new URLSearchParams();
  for (const [k, v] of [["f", S.filter !== "all" && S.filter], ["c", S.column], ["v", S.value],
    ["s", S.sort], ["d", S.desc && "1"], ["q", S.q], ["p", S.page || ""],
    ["i", S.view && S.row && S.row.image_id],
    ["g", !S.view && S.cur > 0 && S.rows[S.cur] && S.rows[S.cur].image_id],
    ["e", !S.view && ended() && "1"]]) if (v) p.set(k, v);
  history.replaceState(null, "", location.pathname + location.search + (p.toString() ? "#" + p : ""));
}
function readPlace() {
  const p = new URLSearchParams(location.hash.slice(1));
  S.filter = p.get("f") || "all"; S.column = p.get("c") || ""; S.value = p.get("v") || "";
  S.sort = p.get("s") || ""; S.desc = p.get("d") === "1"; S.q = p.get("q") || "";
  S.page = Number(p.get("p")) || 0;
  $("column").value = S.column; $("value").value = S.value; $("sort").value = S.sort;
  $("desc").checked = S.desc; $("q").value = S.q;
  return [p.get("i"), p.get("g"), p.get("e") === "1"];
}
async function columnValues() {
  $("values").innerHTML = "";
  if (!S.column) return;
  const d = await getJSON("/api/values?" + new URLSearchParams({ column: S.column }));
  for (const v of d.values) $("values").append(new Option(v, v));
}

// In the image view the rows stay as they are (next/previous walk the page the curator opened),
// but the filters' counts follow each verdict and hint
async function refreshCounts() {
  const seq = S.countSeq = (S.countSeq || 0) + 1;  // two edits' answers may come back crossed
  const d = await getJSON(pageQuery());
  if (seq === S.countSeq) renderFilters(d);
}

function renderFilters(d) {
  S.counts = d.counts;
  $("page-label").textContent = `page ${d.page + 1} of ${d.pages} (${d.total} images)`;
  const nav = $("filters");
  // the button with the focus keeps it, drawn again (pressed from the keyboard, or reached with
  // Tab while an answer or a poll redraws the row): not the chosen filter's, a press taken back
  const had = nav.contains(document.activeElement) && document.activeElement.dataset.filter;
  nav.innerHTML = "";
  for (const f of S.filters) {
    const b = document.createElement("button");
    b.textContent = `${f.replace("_", " ")} ${d.counts[f] ?? ""}`;
    b.dataset.filter = f;
    b.className = f === S.filter ? "on" : "";
    b.setAttribute("aria-pressed", f === S.filter ? "true" : "false");  // not by colour alone
    b.onclick = () => act({ fn: () => { S.filter = f; return newList(); } });  // after the keys before it
    nav.append(b);
    if (had === f) b.focus();
  }
}

// Each part in its own Unicode isolate: a right-to-left override in one cell (a title, a file
// name) must not reverse the parts after it.
const isolate = (v) => "\u2068" + v + "\u2069";
function label(r) {
  const name = r.source_path.split("/").pop();
  const cat = Object.entries(r.catalogue || {}).filter(([, v]) => v && !String(v).endsWith(name));
  // sorted by a catalogue column: its value first, so the order can be seen (a year, a number)
  const key = S.sort ? cat.find(([k]) => k === S.sort) : undefined;
  const rest = cat.filter((e) => e !== key).slice(0, 2);
  return [...(key ? [key] : []), ...rest].map(([, v]) => isolate(v)).concat(isolate(name)).join(" · ");
}

// What a card's pictures show: drawn again (a verdict, a selection, a run's new shard), a card
// keeps its thumbnails unless the run remade them, so the server is not asked for 100 again.
const pictureKey = (r) => [r.image_id, r.status, r.output_sha256, r.source_sha256].join("|");
// quiet: drawn again by itself (a run's commit), it does not scroll the curator to the current card
function renderGrid(quiet = false) {
  const g = $("grid");
  const had = g.contains(document.activeElement);  // a card had the focus: the current one keeps it
  const pairs = new Map([...g.querySelectorAll(".card")].map((c) => [c.dataset.pictures, c.querySelector(".pair")]));
  g.innerHTML = "";
  S.rows.forEach((r, i) => {
    S.names[r.image_id] = label(r);  // said by name once its card has left the rows (an undo)
    const c = document.createElement("div");
    c.className = "card" + (i === S.cur ? " cur" : "") + (S.selected.has(r.image_id) ? " sel" : "");
    c.dataset.id = r.image_id;
    const badges = [r.verdict ? (r.verdict_earlier ? `<span class="badge earlier" title="given to an earlier ` +
      `colouring: a rerun coloured the image anew since">${esc(r.verdict)}, earlier colouring</span>` :
      `<span class="badge ${esc(r.verdict)}">${esc(r.verdict)}</span>`) : "",
      r.status !== "ok" ? `<span class="badge ${esc(r.status)}">${esc(r.status)}</span>` : "",
      r.curator_hints ? `<span class="badge hinted">${plural(r.curator_hints, "hint")}</span>` : "",
      r.note ? `<span class="badge note" title="has a note">note</span>` : ""].filter((x) => x).join(" ") + " ";
    // a thumbnail that failed once (an unreadable scan) is not asked for again on every refresh
    // a file not there is said as missing, and not asked for (its 404 filled the server's terminal)
    const gone = r.status === "error" && /^file not found/.test(r.error || "");
    const thumb = (which) => (gone && which === "source" ? `<span class="nothumb">missing</span>` :
      S.broken.has(pictureKey(r) + which) ? `<span class="nothumb">unreadable</span>` :
      `<img loading="lazy" src="${img(r, which, 240)}" alt="" data-which="${which}">`);
    c.dataset.pictures = pictureKey(r);
    const kept = pairs.get(c.dataset.pictures);
    c.innerHTML = (kept ? "" : `<div class="pair">${thumb("source")}${r.status === "ok" ? thumb("output") : ""}</div>`) +
      `<div class="label">${badges}<span class="name"></span></div>`;
    if (kept) c.prepend(kept);  // with its handlers
    else c.querySelectorAll(".pair img").forEach((im) => {
      im.onerror = () => { S.broken.add(pictureKey(r) + im.dataset.which); im.replaceWith(Object.assign(
        document.createElement("span"), { className: "nothumb", textContent: "unreadable" })); };
    });
    c.querySelector(".label .name").textContent = label(r);
    c.title = label(r);
    // one card in the Tab order (the current one; j, k and the arrows move it), told as a whole
    c.tabIndex = i === S.cur ? 0 : -1;
    c.setAttribute("role", "button");
    if (i === S.cur) c.setAttribute("aria-current", "true");
    // what the card shows, first (a speech user says what they see), then what it shows by look
    c.setAttribute("aria-label", [c.querySelector(".label").textContent.trim(), r.verdict ? "" : "not reviewed",
      S.selected.has(r.image_id) ? "selected for a series" : ""].filter((x) => x).join(", "));
    const rows = S.rows, page = S.page;
    // (after the keys pressed before the click, as a key: a shift-click made the card current at
    // once, and the verdicts waiting judged it)
    c.onclick = (e) => act({ fn: e.shiftKey ? () => shiftClick(r.image_id) : () => openCard(r.image_id, rows, page, i) });
    g.append(c);
  });
  if (ended()) {  // past the list's end: said where the cards end, and the keys' place (a Tab stop)
    const end = Object.assign(document.createElement("div"), { className: "end cur", tabIndex: 0,
      textContent: "the end of the list: no image after the last (k goes back)" });
    end.setAttribute("aria-current", "true");
    g.append(end);
  }
  if (had) focusCard(quiet);
}
const ended = () => S.rows.length > 0 && S.cur >= S.rows.length;
function shiftClick(id) {
  const i = S.rows.findIndex((x) => x.image_id === id);
  if (i < 0) return;  // (gone from the list meanwhile: judged under a filter)
  // the anchor by its image: rows move under a filter as verdicts are given, and pages change
  const a = S.rows.findIndex((x) => x.image_id === S.anchor);
  if (a >= 0 && a !== i) {  // a run of cards, as a file manager selects
    for (let k = Math.min(a, i); k <= Math.max(a, i); k++) S.selected.add(S.rows[k].image_id);
    S.cur = i;
    selectionChanged();
    renderGrid();
  } else { S.cur = i; S.anchor = id; toggleSelect(); }
}
// A card clicked opens once the keys pressed before the click have acted (they went on to the
// new list or image, judging cards never seen); on the page it was clicked on, where those keys
// turned the page since.
function openCard(id, rows, page, i) {
  const at = S.rows.findIndex((r) => r.image_id === id);
  if (at < 0) { S.rows = rows; S.page = page; }
  S.cur = at >= 0 ? at : i;
  S.anchor = id;
  return openView();
}
function focusCard(quiet = false) {
  const c = $("grid").querySelector(".card.cur, .end");
  if (c) c.focus({ preventScroll: quiet });  // else scrolled to: a current card off the screen is lost
}

// The images selected for a series are kept by the tab across a reload, as its place is (a
// curator's trial: a reload lost the selection, made over several pages perhaps)
function selectionChanged() {
  $("sel-count").textContent = S.selected.size;
  sessionStorage.setItem("selected:" + S.outdir, JSON.stringify([...S.selected]));
}
function toggleSelect() {
  const r = S.rows[S.cur];
  if (!r) { if (ended()) say("past the list's last image: no image here to select (k goes back)"); return; }
  S.selected.has(r.image_id) ? S.selected.delete(r.image_id) : S.selected.add(r.image_id);
  selectionChanged();
  if (!S.view) renderGrid();
}

// --- the image view -----------------------------------------------------------------------------
function openView() {
  const r = S.rows[S.cur];
  if (!r) { if (ended()) say("past the list's last image: no image here to open (k goes back)"); return; }
  if (!S.view) { S.gridScroll = window.scrollY; window.scrollTo(0, 0); }  // the image, not the grid's place
  S.view = true;
  // Answers still on their way (this image's, a preview's) belong to the view that asked: when
  // the curator has moved on (j j, Escape), they are dropped, never shown on another image.
  const vg = ++S.viewGen;
  clearTimeout(S.previewTimer);
  $("grid").hidden = true;
  $("viewer").hidden = false;
  // This image's at once, as its card knows it, until its answer comes: a verdict or a note
  // keyed straight after j went to the image before (the view still its), and a note's first
  // letters were overwritten when the answer came. Its pictures and title too (the last image's
  // were judged by the keys meanwhile); hints, a cross, the automatic colour wait for the answer.
  S.row = { ...r };
  S.review = reviewOf(r);
  S.earlier = earlierOf(r.verdict_earlier, S.review);
  writePlace();  // at once: a reload before the answer came went back to the image before
  S.hints = [];
  S.curHint = -1;
  S.cross = null;
  S.automatic = false;
  renderHints();
  $("note").value = S.noteSaved = r.note || "";
  $("title").textContent = label(r);
  $("after").src = $("slider-after").src = r.status === "ok" ? img(r, "output", viewW()) : "";
  showBefore();
  showVerdict();
  // The keys after Enter or j act on this at once (they do not wait for the answer), but for
  // those of its hints and its picture, which wait for it (the arrows moved a cross on none).
  S.filling = fillView(r, vg);
}
async function fillView(r, vg) {
  let d;
  for (;;) {  // an edit still leaving, or keyed meanwhile: its answer first, then the state it made
    const sv = S.saving;
    await sv;
    if (vg !== S.viewGen) return;
    try {
      d = await getJSON("/api/image/" + encodeURIComponent(r.image_id));
    } catch (e) {  // the server away: said; the next j, k or Enter asks again
      if (vg === S.viewGen) say(`NOT shown in full: the review server does not answer (${e.message})`);
      return;
    }
    if (vg !== S.viewGen) return;
    if (sv === S.saving) break;
  }
  fill(d);
  S.filled = vg;  // the view is this image's now: a poll before it would compare another's row
  $("title").textContent = label(r);
  document.title = "Review: " + label(r).replace(/[\u2068\u2069]/g, "");
  $("before").alt = "before: " + $("title").textContent;
  $("after").alt = "after: " + $("title").textContent;
  if (!$("side").contains(document.activeElement) && !$("after-frame").contains(document.activeElement)) $("title").focus();
  $("saved").textContent = "";
  palette(r, vg);  // (not waited for: the keys after Enter or j act once the image is shown)
}
async function palette(r, vg) {
  const pal = await getJSON("/api/colours/" + encodeURIComponent(r.image_id)).catch(() => null);
  if (vg !== S.viewGen || !pal) return;  // the output's own colours are a help, not the view
  $("palette").innerHTML = "";
  for (const c of pal.colours) $("palette").append(swatch(c));
}

// The view filled from the server's answer for its image: when it opens, and when a run
// remade the image while it was open (its new output shown, no reload).
function fill(d) {
  // a note being typed (begun before the answer came) is the curator's: kept, and saved
  const typing = document.activeElement === $("note") && (S.noteTimer || $("note").value !== ((S.review || {}).note || ""));
  const was = S.review;
  S.row = d.row;
  S.review = { ...d.review, image_id: d.row.image_id, rev: { ...(d.review.rev || {}) } };
  S.earlier = earlierOf(d.verdict_earlier, S.review);
  if (typing && was && was.image_id === d.row.image_id) {  // the box's note, on the edit it was made
    // on: its save is checked against that (another curator's since: refused, and merged)
    S.review.note = was.note;
    S.review.rev.note = (was.rev || {}).note;
  }
  S.hints = (d.review.hints || []).map((h) => ({ ...h }));
  S.curHint = -1;
  S.cross = null;  // the last image's place is not this one's (a hint off its picture was refused)
  S.automatic = !!d.automatic;
  showBefore();
  // no output: a scan skipped as colour is hinted on its source (shown in its colour); an
  // unreadable one has nothing to show
  const canvas = d.row.status === "ok" ? img(d.row, "output", viewW()) :
    d.row.status === "skipped" ? img(d.row, "source", viewW()) : "";
  $("after").src = canvas;
  $("after").hidden = !canvas;
  $("slider-after").src = canvas;
  $("after-cap").textContent = d.row.status === "ok" ? "after" :
    `no output: ${d.row.error || d.row.status}` + (canvas ? " · hints go on the source" : "");
  if (!typing) $("note").value = S.noteSaved = d.review.note || "";
  showVerdict();
  renderHints();
  renderMeta(d);
  // Hints saved but not yet run: show what they make, not the output they will replace.
  if (d.hints_pending && S.hints.length) preview();
}

// A hinted output's before side can be the automatic colour it replaced (OUTDIR/automatic/,
// kept by run --hinted): the curator judges the hints against it, and takes them away to go back.
function showBefore() {
  const auto = S.compare && S.automatic;
  $("before").hidden = false;
  $("before").src = img(S.row, auto ? "automatic" : "source", viewW());
  $("slider-before").src = $("before").src;
  $("before-cap").textContent = auto ? "before: the automatic colour (without hints)" : "before";
  $("compare").hidden = !S.automatic;
  $("compare").setAttribute("aria-pressed", String(auto));
}
// a source that cannot be shown (an unreadable scan, the error row's): said, not a broken picture
$("before").addEventListener("error", () => {
  if (!$("before").getAttribute("src")) return;
  $("before").hidden = true;
  $("before-cap").textContent = $("before").src.includes("/automatic?") ? "before: the automatic colour cannot be shown"
    : "before: the scan cannot be shown" + (S.row && S.row.status === "error" && S.row.error ? ` (${S.row.error})` : "");
});
$("before").addEventListener("load", () => { $("before").hidden = false; });  // (a moment's failure passed)
// The view's hints, its automatic colour and its preview are this image's once its answer has
// come: until then (j pressed a moment ago) they were the last image's, and an edit of them
// went onto this one
const filled = () => S.view && S.filled === S.viewGen;
function toggleCompare() {
  if (!filled()) return;
  if (!S.automatic) { say("no automatic colour to compare: this output was not made with hints"); return; }
  S.compare = !S.compare;
  showBefore();
}
$("compare").onclick = toggleCompare;

function closeView() {
  S.view = false;
  S.viewGen++;
  clearTimeout(S.previewTimer);
  $("viewer").hidden = true;
  $("grid").hidden = false;
  document.title = "Review: archive colorizer";
  if (S.hintMode) toggleHintMode();  // back in the grid: the next image opens to be judged, not hinted
  // the grid's place at once (an image opened again before the grid's answer came keeps it),
  // and the answer leaves such a view alone
  window.scrollTo(0, S.gridScroll);
  const vg = S.viewGen;
  // the image it had open stays current (under "not reviewed", judged there, the next one):
  // the grid's old place in rows now shorter skipped the images after it
  const from = [S.row && S.row.image_id, ...S.rows.slice(S.cur + 1).map((r) => r.image_id)].filter((x) => x);
  return loadPage(from).then(() => { if (!S.view && vg === S.viewGen) { window.scrollTo(0, S.gridScroll); focusCard(); } });
}

function renderMeta(d) {
  const t = $("meta");
  t.innerHTML = "";
  const add = (k, v) => {
    const tr = t.insertRow();
    const th = document.createElement("th");  // a row header: read with its value
    th.scope = "row";
    th.textContent = k;
    tr.append(th);
    tr.insertCell().textContent = v == null ? "" :
      typeof v === "number" && !Number.isInteger(v) ? v.toFixed(2) : String(v);
  };
  for (const [k, v] of Object.entries(d.catalogue)) add(k, v);
  for (const k of ["status", "error", "width", "height", "input_kind", "bits", "colorfulness", "hints",
    "hints_digest", "hint_model", "redone", "output_path", "source_path", "notes"]) add(k, d.row[k]);
}

// A verdict given to an earlier colouring of the image (a rerun coloured it anew since): the
// verdict edit it is, which a verdict given now replaces.
function earlierOf(earlier, review) {
  return earlier ? { rev: review.rev.verdict, verdict: review.verdict } : null;
}

function shownEarlier() {
  const e = S.earlier;
  return !!(e && e.rev === S.review.rev.verdict && e.verdict === S.review.verdict);
}

function showVerdict() {
  $("verdict").textContent = (S.review.verdict || "not reviewed") +
    (shownEarlier() ? ", given to an earlier colouring (a rerun coloured it anew since): judge it again" : "");
  // who gave it, and when: several curators sign one archive's images
  const by = S.review.verdict && (S.review.by || {}).verdict;
  $("verdict-by").textContent = by ? `by ${by[0]}, ${new Date(by[1]).toLocaleString()}` : "";
  document.querySelectorAll("#verdict-buttons button").forEach((b) => {
    b.setAttribute("aria-pressed", String(b.dataset.verdict === S.review.verdict));
  });
}

// Edits leave one at a time, each saying which edit of its kind it was made on (rev): one
// made on an older state (another tab, another curator) is refused, and the page then shows
// the state now. force: an undo, which puts back what this page had.
// id: the image of the edit, though the curator has moved on when it leaves. A refusal of that
// image's edits since it was made means it was made on what the refusal replaced: dropped
// (another image's, keyed behind it in the grid, go on). seen: the edit it is made on, as the
// page showed it when the key was pressed; sent so where the page has moved on to another image
// by the time it leaves (keys faster than the answers: a card refreshed meanwhile with another
// curator's edit, or the view gone on with j, sent it over theirs unseen), unless this page's
// own save of it came back meanwhile.
const refusals = (id) => (S.refusedOf || {})[id] || 0;
const ownRev = (id, kind) => ((S.lastRev || {})[id] || {})[kind];
function save(kind, value, ids, force = false, id = S.row.image_id, restore = undefined) {
  const refused = refusals(id);
  const seen = ids === undefined && S.review && S.review.image_id === id && S.review.rev
    ? { base: S.review.rev[kind] ?? null, own: ownRev(id, kind) } : null;
  S.queued = (S.queued || 0) + 1;
  const go = () => { S.queued--; return refusals(id) !== refused && !force ? null : send(id, kind, value, ids, force, seen, restore); };
  S.saving = S.saving.then(go, go);
  return S.saving;
}
// Edits keyed faster than the answers wait their turn in the page: a reload or a closed tab
// then lost them, unsaid ("x x x" and Ctrl+R kept the first). The browser asks first; the one on
// its way is sent with keepalive and arrives anyway.
window.addEventListener("beforeunload", (e) => { if (S.queued || S.acts.length || S.acting) { e.preventDefault(); e.returnValue = ""; } });

async function send(id, kind, value, ids, force, seen, restore) {
  const one = ids === undefined;
  // a series: the server places the hints at the same relative spot of each image
  const body = one ? { image_id: id, kind, value } : { ids, kind, value, from: id, add: true };
  const mine = one && S.review && S.review.rev && S.review.image_id === id;
  if (mine && !force) body.base = S.review.rev[kind] ?? null;
  else if (one && seen && !force) body.base = ownRev(id, kind) !== seen.own ? ownRev(id, kind) : seen.base;
  // an undo puts back what this page had, on its own edit only: one made since in another
  // tab or by another curator is not overwritten unseen (refused, and shown, as any edit is)
  const own = ownRev(id, kind);
  // (none of this page's: made on none, never sent unchecked over another's)
  if (one && force === true) body.base = own ?? null;  // "over": asked twice, no base
  // an undo names the verdict edit it puts back: as it was given, to the colouring it saw
  if (one && force) Object.assign(body, { undo: true, restore });
  // a note saves at each pause in typing: said beside it, not announced every time
  const tell = kind === "note" && one ? (t) => {  // (after a refusal just said: beside it, not over it)
    const keep = Date.now() < (S.refusalShown || 0) ? $("saved").textContent.split(" — ")[0] + " — " : "";
    $("saved").textContent = keep + t;
  } : say;
  tell("saving…");
  let r;
  try {  // keepalive: an edit on its way as the tab closes or reloads still reaches the server
    // (the browser refuses a keepalive body over 64 kB: a series, a very long note, go without)
    const json = JSON.stringify(body);
    r = await api("/api/review", { method: "POST", headers: { "Content-Type": "application/json" },
      body: json, keepalive: new Blob([json]).size < 60000 });
  } catch (e) {  // the server gone (stopped, killed): said, never "saving…" for ever
    say(`NOT saved: the review server does not answer (${e.message}); start colorize review ` +
      "again and open the link it prints: this edit was not kept");
    return null;
  }
  if (r.status === 409) { conflict(kind, value, id, (await r.json()).current); return null; }
  if (!r.ok) { say("NOT saved: " + reason(await r.text())); return null; }
  const d = await r.json();
  const at = one ? [id] : d.ids || ids;  // which edit each image's state now is (a series: those kept)
  S.lastRev = S.lastRev || {};
  at.forEach((i, k) => {
    if (S.review && S.review.image_id === i && S.review.rev) S.review.rev[kind] = d.events[k];
    // its card: the next key on it, or the view opened on it again, starts from this
    const row = S.rows.find((r) => r.image_id === i);
    if (row) row.rev = { ...(row.rev || {}), [kind]: d.events[k] };
    if (row && one && kind !== "hints") row[kind] = value;
    // a verdict now: given to this colouring, or (put back by u) to the one it was given to
    if (kind === "verdict" && d.earlier) {
      if (row) row.verdict_earlier = d.earlier[k];
      if (S.review && S.review.image_id === i) S.earlier = d.earlier[k] ? { rev: d.events[k], verdict: value } : null;
    }
    if (kind === "note" && one && S.row && S.row.image_id === i) S.noteSaved = value || "";
    if (S.review && S.review.image_id === i) S.review.by = { ...(S.review.by || {}), [kind]: [S.me, new Date().toISOString()] };
    S.lastRev[i] = { ...(S.lastRev[i] || {}), [kind]: d.events[k] };  // this page's own edit
  });
  tell(`${kind} saved`);
  if (S.view) refreshCounts();
  return d;
}

// The server's reason, not its JSON: {"error": "..."} as the curator reads it.
function reason(text) {
  try { return JSON.parse(text).error || text; } catch (e) { return text; }
}

function conflict(kind, mine, id, now) {
  S.refused = (S.refused || 0) + 1;
  S.refusedOf = { ...(S.refusedOf || {}), [id]: refusals(id) + 1 };
  const card = S.rows.find((x) => x.image_id === id);  // what its card starts from now: theirs
  if (card) Object.assign(card, { verdict: now.verdict, note: now.note, rev: { ...(now.rev || {}) },
    verdict_earlier: !!now.verdict_earlier });
  const was = kind === "hints" ? "were" : "was";
  if (!S.view || S.row.image_id !== id) {  // which image: the grid has moved on from it
    say(`NOT saved: the ${kind} of ${card ? label(card) : nameOf(id)} ${was} changed by ${now.who || "another curator"} ` +
      "meanwhile; its card shows theirs");
    return;
  }
  const from = S.noteSaved || "";  // the note as this page last knew it saved: the box began from it
  S.noteSaved = now.note || "";
  S.review = { ...now, image_id: id, rev: { ...(now.rev || {}) } };
  S.earlier = earlierOf(now.verdict_earlier, S.review);
  S.hints = (now.hints || []).map((h) => ({ ...h }));
  S.curHint = -1;
  // a note being typed: theirs, then what is being typed, both in the box (the curator typing on
  // over theirs alone made a note of their text and the tail of one's own), saved as it stands
  // (only what was typed over the note it began from, and not again where theirs holds it: two
  // curators typing at once copied both texts at every round)
  const typing = kind === "note" && document.activeElement === $("note");
  const typed = $("note").value, added = typed.startsWith(from) ? typed.slice(from.length).trim() : typed;
  const theirs = now.note || "";
  $("note").value = !typing ? theirs : !added || theirs.includes(added) ? theirs : theirs ? `${theirs}\n${added}` : added;
  if (typing) {
    clearTimeout(S.noteTimer);
    S.noteTimer = setTimeout(saveNote, 400);
    const u = S.undo.findLast((x) => x.id === id && x.kind === "note");  // u goes back to theirs
    if (u && S.noteUndo) u.value = now.note ?? null;
  }
  showVerdict();
  renderHints();
  if (S.hints.length) preview();
  refreshCounts();  // theirs may be a verdict: the filters' counts with it
  const who = now.who || "another curator";
  say(typing ? `NOT saved as typed: the note was changed by ${who} meanwhile; theirs comes first in the box ` +
    "now, yours after it: edit it into one" : `NOT saved: the ${kind} ${was} changed in another tab or by ${who} ` +
    "since this page showed it; it shows theirs now" + (kind === "note" && mine ? ` (yours was: ${mine})` : ""));
}

async function setVerdict(v) {
  const grid = !S.view;
  if (grid) {  // in the grid: the current card
    const r = S.rows[S.cur];
    if (!r) { say(S.rows.length ? "past the list's last image: none here to judge (k goes back)" : "no image here to judge"); return; }
    S.row = { image_id: r.image_id };
    S.review = reviewOf(r);
    S.earlier = earlierOf(r.verdict_earlier, S.review);
  }
  const id = S.row.image_id, was = S.keyed && S.keyed.revs[id];
  // made on the verdict shown as the key was pressed, where this page has not judged it since
  if (was && (S.keyed.own[id] || {}).verdict === ownRev(id, "verdict")) S.review.rev.verdict = was.verdict;
  const step0 = { id, kind: "verdict", value: S.review.verdict, page: grid ? S.page : undefined,
    rev: S.review.rev.verdict };  // the edit u puts back, with the colouring it was given to
  S.undo.push(step0);
  S.review.verdict = v;
  // On to the next card at once, not once the server has answered: "a a" pressed faster than
  // that judged this card twice and left the next unjudged, the cursor then past it
  // the page's last card: the page turns once this is saved, not before (under "not reviewed"
  // the image that moves up into the page would be skipped); the keys after it wait for it
  const last = grid && S.cur + 1 >= S.rows.length;
  if (grid && !last) step(1);
  const saving = save("verdict", v, undefined, false, id);
  const turned = last && turnPage(1, saving);
  const saved = await saving;
  // not saved (refused: another's verdict now; or not sent): nothing of this page's to undo (u
  // then put the verdict from before over the other curator's, unseen)
  if (!saved) step0.unsaved = true;  // (a u that took it already: told by this)
  if (!saved && S.undo.includes(step0)) S.undo.splice(S.undo.lastIndexOf(step0), 1);
  if (saved && S.view && !grid) showVerdict();
  if (!grid || S.view) return;
  // the card now current stays so, where it is listed; a turn draws the page itself
  const went = turned ? await turned : undefined;  // false: none after it (said)
  if (went) return;
  await loadPage(true);
  // The list's last image judged out of it (under a filter): the place is past the end, not on
  // the last card left (one skipped with j, which the keys after then judged, unseen).
  if (went === false && !S.view && !S.rows.some((x) => x.image_id === id)) pastEnd();
}
function pastEnd() {
  S.cur = S.rows.length;
  renderGrid();
  focusCard();
  writePlace();
}

// --- hints --------------------------------------------------------------------------------------
function swatch(hex) {
  const s = document.createElement("button");
  s.type = "button";
  s.className = "swatch";
  s.style.background = hex;
  s.title = hex;
  s.setAttribute("aria-label", "colour " + hex);
  s.onclick = () => pickColour(hex);
  return s;
}

function pickColour(hex) {
  $("picker").value = hex;
  if (S.curHint >= 0 && filled()) {
    const lab = srgbToLab(hex);
    Object.assign(S.hints[S.curHint], lab);
    hintsChanged();
  }
}

function remember(hex) {
  S.recent = [hex, ...S.recent.filter((c) => c !== hex)].slice(0, 10);
  $("recent").innerHTML = "";
  for (const c of S.recent) $("recent").append(swatch(c));
}

function sourceSize() { return { w: S.row.width, h: S.row.height }; }

function renderHints() {
  const m = $("markers");
  m.innerHTML = "";
  const { w, h } = sourceSize();
  S.hints.forEach((hint, i) => {
    const d = document.createElement("div");
    d.className = "marker" + (i === S.curHint ? " cur" : "");
    d.style.left = (100 * hint.x / w) + "%";
    d.style.top = (100 * hint.y / h) + "%";
    d.style.background = labToHex(hint.L ?? 60, hint.a, hint.b);
    d.dataset.i = i;
    d.onmousedown = (e) => startDrag(e, i);
    m.append(d);
  });
  if (S.cross && S.hintMode) {
    const c = document.createElement("div");
    c.className = "cross";
    c.style.left = (100 * S.cross.x / w) + "%";
    c.style.top = (100 * S.cross.y / h) + "%";
    m.append(c);
  }
  const list = $("hint-list");
  list.innerHTML = "";
  S.hints.forEach((hint, i) => {
    const li = document.createElement("li");
    const hex = labToHex(hint.L ?? 60, hint.a, hint.b);
    const b = document.createElement("button");
    b.type = "button";
    b.className = "hint" + (i === S.curHint ? " cur" : "");
    b.setAttribute("aria-pressed", String(i === S.curHint));
    const sw = document.createElement("span");  // a style set by script: the page's CSP refuses inline ones
    sw.className = "swatch";
    sw.style.background = hex;
    b.append(sw);
    b.append(` ${hex} at x ${hint.x.toFixed(0)}, y ${hint.y.toFixed(0)}`);
    b.title = `a* ${hint.a.toFixed(1)} b* ${hint.b.toFixed(1)}: selected, a colour picked recolours it, Delete removes it`;
    b.onclick = (e) => {  // pressed from the keyboard, the new line keeps the focus; clicked, the page
      S.curHint = i;
      renderHints();
      if (e.detail === 0) list.children[i].firstChild.focus();
    };
    b.onkeydown = (e) => { if (e.key === "Delete" || e.key === "Backspace") { e.preventDefault(); S.curHint = i; dropHint(); } };
    li.append(b);
    list.append(li);
  });
}

function pointFromEvent(e) {
  const box = $("after").getBoundingClientRect();
  const { w, h } = sourceSize();
  const x = Math.min(w - 0.5, Math.max(0, (e.clientX - box.left) / box.width * w));
  const y = Math.min(h - 0.5, Math.max(0, (e.clientY - box.top) / box.height * h));
  return { x, y };
}

function addHintAt(e) {
  const point = pointFromEvent(e), hex = $("picker").value, vg = S.viewGen, a = $("after");
  // the picture under the click: this image's, or (its answer not come) the last one's, still
  // shown while this one's loads
  const own = filled() || (a.complete && a.naturalWidth > 0 && a.currentSrc === a.src);
  // A click waits its turn as a key does: an h pressed before it acts once the image's answer has
  // come, and the click then places its hint where it was made. It acted at once, before the
  // h: hint mode was not on yet, and the hint was dropped unsaid (a loaded server's seconds).
  return act({ fn: async () => {
    if (vg !== S.viewGen) return;  // keys before it moved on: the click was on another image
    await S.filling;
    if (vg !== S.viewGen || !S.hintMode) return;
    if (!own) { say("hint not placed: the picture clicked was the last image's, still shown while this one's loaded; click again"); return; }
    return addHint(point, hex);
  } });
}
function addHint(point, hex = $("picker").value) {
  // (not on the last image's picture, still shown until this one's answer comes)
  if (!S.hintMode || !filled() || $("after").hidden || !$("after").naturalWidth) return;
  S.undo.push({ id: S.row.image_id, kind: "hints", value: S.hints.map((h) => ({ ...h })) });
  const { w, h } = sourceSize();
  S.hints.push({ x: Math.min(w - 0.5, Math.max(0, point.x)), y: Math.min(h - 0.5, Math.max(0, point.y)), ...srgbToLab(hex) });
  S.curHint = -1;  // the next colour picked is for the next hint; click a hint to recolour it
  remember(hex);
  return hintsChanged(false);
}

function dropHint() {
  if (!filled() || S.curHint < 0) return;
  S.undo.push({ id: S.row.image_id, kind: "hints", value: S.hints.map((h) => ({ ...h })) });
  S.hints.splice(S.curHint, 1);
  S.curHint = -1;
  return hintsChanged(false);
}

// Without a mouse: in hint mode the after picture takes the focus, the arrows move a cross over
// it (a fiftieth of the picture a press; Shift: five times as far) and Enter puts a hint under it.
function moveCross(dx, dy) {
  if ($("after").hidden || !filled()) { say("no picture here to place a hint on"); return; }
  const { w, h } = sourceSize();
  const c = S.cross || { x: w / 2, y: h / 2 };
  S.cross = { x: Math.min(w - 0.5, Math.max(0, c.x + dx * w / 50)), y: Math.min(h - 0.5, Math.max(0, c.y + dy * h / 50)) };
  renderHints();
  say(`cross at x ${S.cross.x.toFixed(0)}, y ${S.cross.y.toFixed(0)} of ${w} x ${h}: Enter places a hint`);
}
function toggleHintMode() {
  S.hintMode = !S.hintMode;
  document.body.classList.toggle("hintmode", S.hintMode);
  $("hint-mode").setAttribute("aria-pressed", String(S.hintMode));
  $("after-frame").tabIndex = S.hintMode || document.body.classList.contains("zoom") ? 0 : -1;
  if (!S.hintMode) S.cross = null;
  renderHints();
  if (S.hintMode && !S.byPointer && S.view) {  // from the keyboard: straight onto the picture
    $("after-frame").focus();
    say("hint mode on: the arrows move a cross over the after picture, Enter places a hint in the colour picked, Esc ends hint mode");
  }
}

function startDrag(e, i) {
  e.stopPropagation();
  e.preventDefault();
  if (!filled()) return;
  S.curHint = i;
  S.dragging = true;
  const before = S.hints.map((h) => ({ ...h }));
  let moved = false;
  const move = (ev) => { moved = true; Object.assign(S.hints[i], pointFromEvent(ev)); renderHints(); };
  const up = () => {
    document.removeEventListener("mousemove", move);
    document.removeEventListener("mouseup", up);
    S.dragging = false;
    if (moved) {  // moved, not selected: the next colour picked is the next hint's, not this one's
      S.curHint = -1;
      S.undo.push({ id: S.row.image_id, kind: "hints", value: before });
      hintsChanged(false);
    }
    else renderHints();  // a click: this hint is selected (the picker recolours it, Delete removes it)
  };
  document.addEventListener("mousemove", move);
  document.addEventListener("mouseup", up);
}

async function hintsChanged(pushUndo = true) {
  if (pushUndo) S.undo.push({ id: S.row.image_id, kind: "hints", value: S.review.hints || [] });
  const step = S.undo[S.undo.length - 1];  // this edit's (its callers push it just before)
  S.review.hints = S.hints.map((h) => ({ ...h }));
  renderHints();
  const vg = S.viewGen;
  // not saved (refused: another curator's hints since; or not sent): nothing of this page's to
  // undo, as for a verdict (u put back the hints before it over theirs, when asked twice)
  if (!await save("hints", S.review.hints) && step && step.kind === "hints") step.unsaved = true;
  if (vg !== S.viewGen) return;  // saved; the curator has left this image: no preview of it
  clearTimeout(S.previewTimer);
  S.previewTimer = setTimeout(preview, 150);
}

async function preview() {
  const t0 = performance.now(), gen = ++S.previewGen, vg = S.viewGen, n = S.hints.length;
  $("after-cap").textContent = "preview: colouring…";
  let r;
  try {
    r = await api("/api/preview/" + encodeURIComponent(S.row.image_id), { method: "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ hints: S.hints }) });
  } catch (e) {  // the server gone meanwhile: said, not "colouring…" for ever
    if (gen === S.previewGen && vg === S.viewGen) $("after-cap").textContent = `preview failed: the review server does not answer (${e.message})`;
    return;
  }
  // A preview answered after a newer one was asked for, or after the curator left the image,
  // is not this view's: it would put older hints' colour, or another image, on the screen.
  if (gen !== S.previewGen || vg !== S.viewGen) return;
  if (!r.ok) { $("after-cap").textContent = "preview failed: " + (await r.text()); return; }
  const blob = await r.blob();
  if (gen !== S.previewGen || vg !== S.viewGen) return;
  const url = URL.createObjectURL(blob);
  $("after").src = url;
  $("slider-after").src = url;
  $("after-cap").textContent = `preview with ${plural(n, "hint")} (${Math.round(performance.now() - t0)} ms)` +
    " · colorize run --hinted makes it the output";
}

async function applySeries() {
  if (!filled()) return;
  const ids = [...S.selected];
  if (!ids.length) { say("no images selected: select them in the grid or with Space, then apply"); return; }
  if (!S.hints.length) { say("no hints to apply: place this image's hints first"); return; }
  const done = await save("hints", S.hints.map((h) => ({ ...h })), ids);
  if (!done) return;
  S.undo.push({ kind: "series", before: done.before });  // u takes the whole series back
  const out = Object.values(done.left_out || {});  // images with no picture (a file the run could not read)
  say(`saved: ${plural(S.hints.length, "hint")} added to ${plural(done.saved, "image")}` +
    " (each keeps its own; a hint one already has is not added twice)" +
    (out.length ? `; ${plural(out.length, "image")} left out: ${out.join("; ")}` : ""));
  S.selected.clear();
  selectionChanged();
}

function plural(n, what) { return `${n} ${what}${n === 1 ? "" : "s"}`; }

async function undo() {
  const u = S.undo.pop();
  if (!u) { say("nothing to undo: this page has no edit left to take back"); return; }
  if (u.kind === "series") {
    // refused (another curator's hints since): the next u puts these back over them, knowingly;
    // not sent (the server away): the next u tries again as it was
    const left = {}, unsent = {};
    for (const [id, value] of Object.entries(u.before)) {
      const was = refusals(id);
      if (!await save("hints", value, undefined, u.over ? "over" : true, id)) (refusals(id) !== was ? left : unsent)[id] = value;
    }
    const n = Object.keys(u.before).length, k = Object.keys(left).length, m = Object.keys(unsent).length;
    if (m) S.undo.push({ kind: "series", before: unsent, over: u.over });
    if (k) S.undo.push({ kind: "series", before: left, over: true });
    if (k || m) {
      say(`NOT all undone: the hints added to ${plural(n - k - m, "image")} taken back` +
        (k ? `; ${plural(k, "image")} changed since by another curator keep them (u again puts back this page's over them)` : "") +
        (m ? `; ${plural(m, "image")} not reached (the server did not answer: u again tries again)` : ""));
    } else say(`undone: the hints added to ${plural(n, "image")}`);
    if (S.view && S.row.image_id in u.before && !(S.row.image_id in left) && !(S.row.image_id in unsent)) {
      S.hints = u.before[S.row.image_id].map((h) => ({ ...h }));
      S.review.hints = u.before[S.row.image_id];
      renderHints();
    }
    return S.view ? refreshCounts() : loadPage();
  }
  // an edit still on its way is answered first; one that was never saved (refused, not sent)
  // has nothing of this page's to take back: the step before it is undone instead (u pressed
  // before a refusal came put the old value over the other curator's, on being asked twice)
  await S.saving;
  if (u.unsaved || ownRev(u.id, u.kind) === undefined) return undo();
  const here = S.view && S.row.image_id === u.id;
  const refused = S.refused;
  if (!await save(u.kind, u.value, undefined, u.over ? "over" : true, u.id, u.rev)) return kept(u, refused);
  if (here) {
    if (u.kind === "hints") { S.hints = u.value.map((h) => ({ ...h })); S.review.hints = u.value; renderHints(); preview(); }
    if (u.kind === "verdict") { S.review.verdict = u.value; showVerdict(); }  // (S.earlier: the answer's)
    if (u.kind === "note") { S.review.note = u.value; $("note").value = u.value || ""; }
    say("undone");
    return;
  }
  // another image's edit: said by name; the view keeps its place (next/previous walk on from it).
  // In the grid a verdict taken back makes its card current where it is listed, under every
  // filter alike (to judge it again; under "not reviewed" the cursor was on it, under "all" not)
  const r = S.rows.find((x) => x.image_id === u.id);
  say(`undone: the ${u.kind} of ${r ? label(r) : nameOf(u.id)}`);
  if (S.view) return refreshCounts();
  const cur = S.rows[S.cur];
  if (u.kind !== "verdict") return loadPage();
  // (on the page it was judged on, where the verdict turned the page: j j j j a u)
  if (u.page !== undefined && !S.rows.some((x) => x.image_id === u.id)) S.page = u.page;
  return loadPage([u.id, ...(cur ? [cur.image_id] : [])]);
}

// An undo not done stays the next one: refused (an edit made since, in another tab or by
// another curator: the page shows it now), the next u puts this page's back over it, knowingly;
// not sent (the server gone), the next u tries again.
function kept(u, refused) {
  S.undo.push({ ...u, over: S.refused !== refused });
  if (S.refused !== refused) say(`${$("status").textContent}; press u again to put back what this page had over it`);
}

// --- reference image: sample a colour from a photo the curator opens beside it -------------------
$("ref-file").onchange = (e) => {
  const f = e.target.files[0];
  if (!f) return;
  const im = new Image();
  im.onload = () => {
    const c = $("ref");
    c.width = im.naturalWidth;
    c.height = im.naturalHeight;
    c.getContext("2d").drawImage(im, 0, 0);
    c.hidden = false;
  };
  im.src = URL.createObjectURL(f);
};
$("ref").onclick = (e) => {
  const c = $("ref"), box = c.getBoundingClientRect();
  const x = Math.floor((e.clientX - box.left) / box.width * c.width);
  const y = Math.floor((e.clientY - box.top) / box.height * c.height);
  const p = c.getContext("2d").getImageData(Math.max(0, x - 2), Math.max(0, y - 2), 5, 5).data;
  let rgb = [0, 0, 0];
  for (let i = 0; i < p.length; i += 4) for (let k = 0; k < 3; k++) rgb[k] += p[i + k] / (p.length / 4);
  const hex = "#" + rgb.map((v) => Math.round(v).toString(16).padStart(2, "0")).join("");
  remember(hex);
  pickColour(hex);
};

// --- wiring -------------------------------------------------------------------------------------
$("after-frame").addEventListener("click", addHintAt);
$("picker").addEventListener("change", (e) => {
  remember(e.target.value);
  pickColour(e.target.value);
  if (S.byPointer) e.target.blur();
});
$("preview-btn").onclick = () => { if (filled()) preview(); };
$("clear-hints").onclick = () => { if (!filled()) return; S.undo.push({ id: S.row.image_id, kind: "hints", value: S.hints }); S.hints = []; S.curHint = -1; hintsChanged(false); };
$("apply-series").onclick = applySeries;
$("hint-mode").onclick = toggleHintMode;
$("keys-on").checked = localStorage.getItem("colorize-keys") !== "off";
$("keys-on").onchange = (e) => localStorage.setItem("colorize-keys", e.target.checked ? "on" : "off");
// A note is saved as it is typed (a reload or a closed tab loses nothing); one undo step per visit.
$("note").addEventListener("focus", () => { S.noteWas = S.review.note; S.noteUndo = false; });
async function saveNote() {
  clearTimeout(S.noteTimer);
  S.noteTimer = null;
  const v = $("note").value;
  if (v === (S.review.note || "")) return;
  if (!S.noteUndo) { S.undo.push({ id: S.row.image_id, kind: "note", value: S.noteWas }); S.noteUndo = true; }
  S.review.note = v;
  // on its way: a tab reloaded before its answer sends the rest on top of it
  const sent = S.noteSent = { image_id: S.row.image_id, text: v };
  await save("note", v);
  if (S.noteSent === sent) S.noteSent = null;
}
$("note").addEventListener("input", () => { clearTimeout(S.noteTimer); S.noteTimer = setTimeout(saveNote, 400); });
$("note").addEventListener("change", saveNote);
window.addEventListener("pagehide", () => {  // a reload or a closed tab before the pause: sent anyway
  if (!S.noteTimer || !S.row) return;
  const body = JSON.stringify({ image_id: S.row.image_id, kind: "note", value: $("note").value,
    base: (S.review.rev || {}).note ?? null });  // made on what this tab showed, like any edit
  navigator.sendBeacon("/api/review?t=" + encodeURIComponent(TOKEN), new Blob([body], { type: "application/json" }));
  sessionStorage.setItem("note-leaving", body);  // a reload: the page it becomes makes sure
  // of this image, this leaving (a page restored from the back-forward cache kept an older one)
  if (S.noteSent) sessionStorage.setItem("note-leaving-after", JSON.stringify(S.noteSent));
  else sessionStorage.removeItem("note-leaving-after");
});
// The beacon of a reload may reach the server after the reloaded page has asked for the note,
// which then showed none. So the new page sends it again first, on the same base: whichever of
// the two comes second is refused as made on an older note, and the note is kept exactly once.
// A save still on its way as the tab left (typing went on meanwhile) moved the note on from the
// base the beacon names: both the beacon and this were refused, and the words typed after it
// lost. Where the note now is exactly what that save sent, this tab's own, they go on top of it.
async function noteLeft() {
  const body = sessionStorage.getItem("note-leaving"), after = sessionStorage.getItem("note-leaving-after");
  if (!body) return;
  sessionStorage.removeItem("note-leaving");
  sessionStorage.removeItem("note-leaving-after");
  const post = (b) => api("/api/review", { method: "POST", headers: { "Content-Type": "application/json" }, body: b });
  try {
    const r = await post(body);
    const sent = JSON.parse(after || "null"), leaving = JSON.parse(body);
    if (r.status !== 409 || !sent || sent.image_id !== leaving.image_id) return;
    const now = (await r.json()).current || {};
    if ((now.note || "") === sent.text) await post(JSON.stringify({ ...leaving, base: (now.rev || {}).note ?? null }));
  } catch (e) { /* the server gone: the beacon was the last chance, as for a closed tab */ }
}
// A verdict clicked is for the image on the screen as it was clicked: keys still waiting before
// it that go on (Esc, j) leave it with no image to judge, said (it judged the next, unseen)
document.querySelectorAll("#verdict-buttons button").forEach((b) => {
  b.onclick = () => {
    const on = S.view && S.row && S.row.image_id;
    act({ fn: () => (S.view && S.row && S.row.image_id === on ? setVerdict(b.dataset.verdict)
      : say(`NOT saved: the image the ${b.dataset.verdict} was clicked on is no longer open (the keys before the click went on): open it and judge it again`)) });
  };
});
// Another list (a filter, a search, a sort, a page) begins at its first card, not at the place
// the last one's current card had (the 57th of a filter of 60 was the 57th of the next). An
// image open meanwhile keeps the rows it was opened from, and its place in them (j went to the
// new list's first image, not the next), until it closes.
function newList(page = 0) {
  S.page = page;
  if (!S.view) S.cur = 0;
  return loadPage();
}
// the page before or after the one shown as clicked, once the keys before the click have acted
$("prev-page").onclick = () => { const p = S.page - 1; if (p >= 0) act({ fn: () => newList(p) }); };
$("next-page").onclick = () => { const p = S.page + 1; if (p < S.pages) act({ fn: () => newList(p) }); };
// A list chosen (a column, a value, a sort, a search) is another list once the keys pressed
// before it have acted: typed into the search box as they waited, it took them to its own cards.
const relist = (change) => act({ fn: () => { change(); return newList(); } });
$("column").onchange = (e) => {
  const v = e.target.value;
  $("value").value = "";
  relist(() => {
    S.column = v;
    S.value = "";  // a value left from the last column filtered this one (a blank grid)
    columnValues();
  });
};
$("value").oninput = (e) => { const v = e.target.value; clearTimeout(S.vt); S.vt = setTimeout(() => relist(() => { S.value = v; }), 250); };
$("sort").onchange = (e) => { const v = e.target.value; relist(() => { S.sort = v; }); };
$("desc").onchange = (e) => { const v = e.target.checked; relist(() => { S.desc = v; }); };
$("q").oninput = (e) => { const v = e.target.value; clearTimeout(S.qt); S.qt = setTimeout(() => relist(() => { S.q = v; }), 200); };
$("slider").oninput = (e) => { $("slider-before-clip").style.width = e.target.value + "%"; };
// the slider gives the keys back once let go (a focused slider took j, k, a... for itself)
$("slider").addEventListener("change", (e) => { if (S.byPointer) e.target.blur(); });
for (const id of ["column", "sort"]) $(id).addEventListener("change", (e) => { if (S.byPointer) e.target.blur(); });
$("slider").addEventListener("pointerup", (e) => e.target.blur());
// a clicked button gives the keys back too: Enter would click it again
document.addEventListener("click", (e) => {  // detail 0: pressed from the keyboard, focus stays
  const b = e.target.closest("button, input[type=checkbox]");
  if (b && e.detail > 0) b.blur();
});
document.addEventListener("pointerdown", () => { S.byPointer = true; }, true);
document.addEventListener("keydown", () => { S.byPointer = false; }, true);
// the before image, clipped, is drawn at the after image's size: the halves line up
// The slider's picture as large as fits, as side by side shows it: a small scan left at its own
// size sat in the corner of a frame the width of the view, and the split, a share of the frame,
// fell past it (only its before side showed). The frame fits the picture (review.css).
function fitSlider() {
  const im = $("slider-after");
  if (im.naturalWidth && !$("slider-wrap").hidden) fitTo(im, $("slider-wrap").clientWidth);
  $("slider-before").style.width = im.clientWidth + "px";
}
$("slider-after").addEventListener("load", fitSlider);

// Each pane shows its picture as large as fits (a small scan enlarged too), or at 1:1 when
// zoomed; the hint markers sit on the picture's own box, so they stay put when it scrolls.
function fitImages() {
  for (const id of ["before", "after"]) {
    const im = $(id);
    if (im.naturalWidth) fitTo(im, im.closest(".pane").clientWidth);
  }
}
// A picture as wide as `room` and the view's height allow, or at 1:1 when zoomed.
function fitTo(im, room) {
  const fit = Math.min(room, window.innerHeight * 0.78 * im.naturalWidth / im.naturalHeight);
  im.style.width = (document.body.classList.contains("zoom") ? im.naturalWidth : Math.max(1, Math.floor(fit))) + "px";
}
$("before").addEventListener("load", fitImages);
$("after").addEventListener("load", fitImages);
window.addEventListener("resize", () => { fitImages(); fitSlider(); });
// zoomed, the two panes scroll together: the same spot of before and after side by side
for (const [a, b] of [["before-frame", "after-frame"], ["after-frame", "before-frame"]]) {
  $(a).addEventListener("scroll", () => {
    if (S.syncing) { S.syncing = false; return; }
    S.syncing = true;
    $(b).scrollLeft = $(a).scrollLeft;
    $(b).scrollTop = $(a).scrollTop;
  });
}

function step(d) {
  if (S.cur + d >= S.rows.length || S.cur + d < 0) return turnPage(d);
  S.cur += d;
  if (S.view) return openView();
  renderGrid();
  focusCard();
  writePlace();
}

// Next and previous go on past a page's end (a curator working through thousands with the
// keys, not the mouse: j stopped at the 100th image, unsaid). Going on, the page walked is asked
// for again first: under a filter the judged images leave ("not reviewed"), the images that
// moved up into it are next; the next page would skip as many as were judged. Keys pressed
// meanwhile wait for the turn (one keyed after j is meant for the image j goes to).
function turnPage(d, after = S.saving) {
  const seq = S.loadSeq = (S.loadSeq || 0) + 1;
  const walked = new Set(S.rows.map((r) => r.image_id)), vg = S.viewGen;  // as the key was pressed
  // (a turn is one key's action: none is under way when another key, a click or a poll acts)
  return (S.loading = Promise.resolve(after).then(() => turnTo(seq, d, walked, vg))
    .catch((e) => { if (seq === S.loadSeq) say(`NOT moved on: ${e.message}`); }));
}
// (after the edits on their way: the page walked asked for again before its last verdict was
// saved still listed it, and the image moving up into it was skipped)
// Back (k), the card before is the last of the page before that is not on this page: under a
// filter the list grows shorter as images are judged, and this page's first cards move down into
// it; the page before may be past the list's end now (its last page is then the one before).
async function turnTo(seq, d, walked, vg) {
  for (let p of (d > 0 ? [S.page, S.page + 1] : [S.page - 1, S.page - 2]).filter((p) => p >= 0)) {
    let got = await getJSON(pageQuery(p));
    if (seq !== S.loadSeq || vg !== S.viewGen) return;  // an image opened (a click), or the view closed, meanwhile
    if (d < 0 && !got.rows.length && got.pages && p >= got.pages) {
      got = await getJSON(pageQuery(p = got.pages - 1));
      if (seq !== S.loadSeq || vg !== S.viewGen) return;
    }
    const fresh = (r) => !walked.has(r.image_id);
    const at = d > 0 ? got.rows.findIndex(fresh) : got.rows.findLastIndex(fresh);
    if (at < 0) continue;
    S.page = p;
    if (S.view) {
      S.rows = got.rows; S.pages = got.pages; S.cur = at; S.gridScroll = 0;
      S.pageGen++;  // a poll's answer for the page before is older than these rows
      renderFilters(got);
      writePlace();
      openView();
      return true;
    }
    showPage(got, [got.rows[at].image_id]);
    window.scrollTo(0, 0);
    focusCard();
    writePlace();
    return true;
  }
  say(d > 0 ? "the last image of the list: none after it" : "the first image of the list: none before it", true);
  return false;
}

// The curator's keys act one at a time, in the order pressed, each once the one before is done
// (its edit answered, the grid drawn again, the image or the page it went to shown): keys
// faster than the answers do what they would on a fast server. Each waiting only for what it
// knew of, "a u r" undid the r, "Enter a Esc Enter x" judged the image just judged again, and
// "a a k x" went back onto a judged card. A verdict clicked waits its turn too; after n, the
// note's letters go into the note. The browser's own keys, and a control's, act at once.
const ACTS = new Set(["a", "r", "x", "u", "j", "k", "n", "h", "c", "s", "z", " ", "ArrowLeft",
  "ArrowRight", "Enter", "Escape", "Delete", "Backspace"]);
const keyOf = (e) => (e.key.length === 1 ? e.key.toLowerCase() : e.key);
const plain = (e) => !(e.ctrlKey || e.metaKey || e.altKey);
const undoKey = (e) => (e.ctrlKey || e.metaKey) && !e.altKey && keyOf(e) === "z";
const onPicture = (t) => S.hintMode && t === $("after-frame");
// in the image view, the keys that act before its answer has come (on the image as its card
// knows it); the others (hints, the automatic colour) wait for it
const NOW = new Set(["a", "r", "x", "u", "j", "k", "n", "s", "z", " ", "Escape", "ArrowLeft", "ArrowRight"]);
// what the browser does itself: a control's keys, its shortcuts, a zoomed picture scrolled
function native(e) {
  const t = e.target, k = keyOf(e);
  if (t.matches("textarea, select, input, button")) return true;
  if (undoKey(e)) return false;
  if (!plain(e) || (k.length === 1 && k !== " " && !$("keys-on").checked)) return true;
  return document.body.classList.contains("zoom") && t.classList.contains("frame") &&
    /^(Arrow|Page|Home$|End$)/.test(k) && !(onPicture(t) && k.startsWith("Arrow"));
}
S.acts = [];
document.addEventListener("keydown", (e) => {
  const typed = S.acts.some((q) => q.e && plain(q.e) && keyOf(q.e) === "n");
  // (the arrows behind waiting keys too: an h before them puts the picture under them)
  const busy = S.acting || S.acts.length;
  if (!native(e) && (ACTS.has(keyOf(e)) || undoKey(e) || (typed && e.key.length === 1) ||
      (e.key.startsWith("Arrow") && (onPicture(e.target) || (S.view && busy))))) {
    e.preventDefault();
    act({ e, typed });
    return;
  }
  onKey(e);
});
// What the page showed as a key was pressed: the edit it makes, acting later, is made on that. A
// card drawn again meanwhile with another curator's verdict is not what the curator judged: sent
// on what was shown, it is refused and named, as it was before keys waited their turn.
function shown() {
  const revs = {};
  for (const r of S.rows) revs[r.image_id] = { ...(r.rev || {}) };
  if (filled() && S.review) revs[S.review.image_id] = { ...(S.review.rev || {}) };
  return { revs, own: { ...(S.lastRev || {}) } };
}
function act(q) {
  S.acts.push({ ...q, shown: shown() });
  if (!S.acting) S.acting = drain().finally(() => { S.acting = null; });
  return S.acting;
}
// where a waiting key acts: the focus now, unless it was taken by a control meanwhile (a click)
function here(e) {
  const a = document.activeElement;
  return a && a !== document.body && !a.matches("textarea, select, input, button") ? a : e.target;
}
async function drain() {
  while (S.acts.length) {
    const q = S.acts.shift();
    // a server slow to answer (or stalled) is said with the keys it holds, not silence
    const slow = setTimeout(() => say(`the server is slow to answer: ${plural(S.acts.length + 1, "key")} ` +
      "waiting, to act in order once it does"), 4000);
    try {
      S.keyed = q.shown;  // (read as the key begins to act)
      // a note's letters go in at once (waiting, they came after the ones typed later)
      if (q.typed && document.activeElement === $("note")) { typeInto($("note"), q.e); continue; }
      // A key acts where the focus is when it acts, not where it was pressed: an h before it
      // has put the picture under the arrows and Enter since (they moved on to the next image).
      const t = q.e && here(q.e);
      if (q.e && S.view && (onPicture(t) || !NOW.has(keyOf(q.e)))) await S.filling;
      // a hint placed from the keyboard, on the picture once it is there (not dropped, unsaid)
      if (q.e && S.view && onPicture(t)) await $("after").decode().catch(() => null);
      await (q.fn ? q.fn() : onKey(q.e, t));
    } catch (err) { say(`NOT done: ${err.message}`); }  // (the server away): the next key goes on
    finally { S.keyed = null; clearTimeout(slow); }
  }
}
// every key pressed so far acted, and its edits answered (what the tests wait for)
async function settled() {
  while (S.acting) await S.acting;
  await S.saving;
}
// n then the note's letters, keyed before it acted: typed into the note once it is open
function typeInto(box, e) {
  if (e.key === "Escape") {  // as a curator's Esc leaves it: the note saved now, on its image
    box.dispatchEvent(new Event("change", { bubbles: true }));  // (typed so, the box fires none)
    box.blur();
    (S.view ? $("title") : document.body).focus();
    return;
  }
  const text = e.key === "Enter" ? "\n" : e.key.length === 1 ? e.key : e.key === "Backspace" ? "" : null;
  if (text === null || !plain(e)) return;
  const at = box.selectionStart;
  if (e.key === "Backspace" && at === box.selectionEnd && at > 0) box.setSelectionRange(at - 1, at);
  box.setRangeText(text, box.selectionStart, box.selectionEnd, "end");
  box.dispatchEvent(new Event("input", { bubbles: true }));
}
function onKey(e, t = e.target) {
  // A control keeps its keys: typing in a field, Space on a checkbox, the arrows on the slider,
  // Enter on a button or the colour picker (a control clicked with the mouse gives the focus
  // back at once). Esc leaves it; a search field would also empty itself and leave its filter
  // on, hidden: the text stays, as what the grid shows.
  if (t.matches("textarea, select, input, button")) {
    if (e.key === "Escape") {  // back to where the keys act: the picture in hint mode, else the image or its card
      e.preventDefault();
      t.blur();
      if (S.view) (S.hintMode ? $("after-frame") : $("title")).focus(); else focusCard();
    }
    return;
  }
  if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") { e.preventDefault(); return undo(); }
  if (e.ctrlKey || e.metaKey || e.altKey) return;  // the browser's own: Ctrl+A, Ctrl+R, Alt+...
  const k = e.key.length === 1 ? e.key.toLowerCase() : e.key;  // Shift or Caps Lock alike
  // single-key shortcuts can be turned off (speech input types letters; WCAG 2.1.4)
  if (k.length === 1 && k !== " " && !$("keys-on").checked) return;
  // zoomed, a picture reached with Tab scrolls with the arrows and Page keys, as any scroll box
  if (document.body.classList.contains("zoom") && t.classList.contains("frame") &&
      /^(Arrow|Page|Home$|End$)/.test(k) && !(onPicture(t) && k.startsWith("Arrow"))) return;
  if (S.hintMode && S.view && t === $("after-frame")) {
    const far = e.shiftKey ? 5 : 1;
    const arrows = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    if (arrows[k]) { e.preventDefault(); moveCross(arrows[k][0] * far, arrows[k][1] * far); return; }
    if (k === "Enter") { e.preventDefault(); if (!S.cross) moveCross(0, 0); return addHint(S.cross); }
    if (k === "Escape") { toggleHintMode(); $("title").focus(); say("hint mode off"); return; }
  }
  // (each gives what it waits for: the key after it acts once it is done)
  if (k === "a") return setVerdict("accepted");
  if (k === "r") return setVerdict("retouch");
  if (k === "x") return setVerdict("rejected");
  if (k === "j" || k === "ArrowRight") { e.preventDefault(); return step(1); }
  if (k === "k" || k === "ArrowLeft") { e.preventDefault(); return step(-1); }
  if (k === "Enter" && !S.view) return openView();
  if (k === "Escape" && S.view) return closeView();
  if (k === "u") return undo();
  if (k === "p" && S.view) return applySeries();  // these hints put on every image selected
  if ((k === "Delete" || k === "Backspace") && S.view && S.curHint >= 0) return dropHint();
  if (k === "n" && S.view) { e.preventDefault(); $("note").focus(); }
  else if (k === "h" && S.view) toggleHintMode();
  else if (k === "c" && S.view) toggleCompare();
  else if (k === "z" && S.view) {
    const zoom = document.body.classList.toggle("zoom");
    $("before-frame").tabIndex = zoom ? 0 : -1;  // reached with Tab to scroll (2.1.1)
    if (!S.hintMode) $("after-frame").tabIndex = zoom ? 0 : -1;
    sharpen();
    fitImages();
    fitSlider();
  }
  else if (k === "s" && S.view) {
    S.slider = !S.slider;
    $("slider-wrap").hidden = !S.slider;
    document.querySelectorAll(".pane").forEach((p) => { p.hidden = S.slider; });
    fitSlider();
  } else if (k === " ") { e.preventDefault(); toggleSelect(); }
}

// Another curator's edit (a second server on the OUTDIR, another tab) shows on an open image
// within seconds, not only once one's own edit is refused: never while this page is saving, nor
// while its note is being typed.
// A run working meanwhile (overnight, or `run --hinted` in a terminal) shows too: the grid's
// page and counts as its shards commit, and an open image's new output once it is remade.
S.pollMs = window.colorizePollMs || 5000;  // (a test sets its own)
async function poll() {
  try {
    if (document.hidden) return;
    if (!S.view) { await pollGrid(); return; }
    if (!S.row || !S.review || document.activeElement === $("note") || S.noteTimer) return;
    if (S.dragging || S.filled !== S.viewGen || S.acting) return;  // (keys at work: the next look)
    const vg = S.viewGen, id = S.row.image_id;
    await S.saving;
    const sv = S.saving;
    const d = await getJSON("/api/image/" + encodeURIComponent(id));
    // anything since the look began (an edit saved or leaving, the note taken up, a drag) is newer
    if (vg !== S.viewGen || !S.review || S.review.image_id !== id || S.saving !== sv || S.dragging || S.acting ||
        document.activeElement === $("note") || S.noteTimer) return;
    if (["status", "output_sha256", "hints_digest"].some((k) => (d.row[k] ?? null) !== (S.row[k] ?? null))) {
      fill(d);
      refreshCounts();  // "hints pending" no more
      say(d.row.status !== "ok" ? `the run remade this image: ${d.row.status}` : d.hints_pending && S.hints.length ?
        "the run remade this image; its hints changed since: previewed" : "the run remade this image: its new output is shown");
      return;
    }
    const mine = S.review.rev || {}, now = d.review.rev || {};
    const changed = ["verdict", "note", "hints"].filter((k) => (mine[k] ?? null) !== (now[k] ?? null));
    if (!changed.length) return;
    S.review = { ...d.review, image_id: id, rev: { ...now } };
    S.earlier = earlierOf(d.verdict_earlier, S.review);
    S.hints = (d.review.hints || []).map((h) => ({ ...h }));
    S.curHint = -1;
    if (changed.includes("note")) $("note").value = S.noteSaved = d.review.note || "";
    showVerdict();
    renderHints();
    if (changed.includes("hints")) {
      if (S.hints.length) preview();
      else if (S.row.status === "ok") $("after").src = $("slider-after").src = img(S.row, "output", viewW());
    }
    say(`${changed.join(", ")} changed by ${d.review.who || "another curator"} meanwhile: shown`);
  } catch (e) { /* the server away for a moment: the next look, or the next edit, says so */ }
  finally { setTimeout(poll, S.pollMs); }
}
// Cards are not moved under a curator at work (a click would open another image, a shift-click
// take in cards never seen): a page whose images changed waits until the pointer and the keys
// have rested a few seconds; badges and counts on the same cards show at once.
S.touched = 0;
for (const ev of ["pointermove", "pointerdown", "keydown", "wheel"]) {
  document.addEventListener(ev, () => { S.touched = Date.now(); }, { passive: true, capture: true });
}
async function pollGrid() {
  await S.saving;
  if (S.acting) return;  // keys at work: the next look
  const q = pageQuery(), gen = S.pageGen, sv = S.saving;
  const d = await getJSON(q);
  // the curator moved, or an edit left, meanwhile: this answer is older than what is shown
  if (S.view || S.acting || q !== pageQuery() || gen !== S.pageGen || sv !== S.saving) return;
  const ids = (rows) => rows.map((r) => r.image_id).join("\n");
  const seen = (rows) => rows.map((r) => [pictureKey(r), r.verdict, r.curator_hints, r.note].join("|")).join("\n");
  if (ids(d.rows) !== ids(S.rows) && Date.now() - S.touched < 4000) return;  // the next look
  if (!d.rows.length && S.page > 0) { await loadPage(); return; }  // emptied meanwhile: the last page with any
  if (seen(d.rows) !== seen(S.rows) || d.pages !== S.pages) showPage(d, true);
  else if (JSON.stringify(d.counts) !== JSON.stringify(S.counts)) renderFilters(d);
}
setTimeout(poll, S.pollMs);

noteLeft().then(loadInfo).then(async () => {
  const [open, card, end] = readPlace();
  // (by its OUTDIR: another run's review served later at the same address is another selection)
  S.selected = new Set(JSON.parse(sessionStorage.getItem("selected:" + S.outdir) || "[]"));
  $("sel-count").textContent = S.selected.size;
  if (S.column) columnValues();
  await loadPage();
  const i = S.rows.findIndex((r) => r.image_id === (open || card));
  if (i >= 0 && open) { S.cur = i; openView(); } else if (i >= 0 || (end && S.rows.length)) {
    S.cur = i >= 0 ? i : S.rows.length;
    renderGrid();
    focusCard();
    writePlace();
  }
});
