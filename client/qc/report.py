"""QC reports in SCT's layout (`-qc DIR`), viewable offline in any browser: entries and index page.

    DIR/<dataset>/<subject>/<contrast>/<command>/<timestamp>/background_img.png, overlay_img.png
    DIR/_json/qc_<timestamp>.json      one per entry (SCT's keys)
    DIR/index.html                     every entry; keyboard navigation, overlay toggle, marks

An entry's images come from `lesionseg.client.qc.mosaic` (transparent overlay, lesions red, cord
cyan); `lesionseg.client.qc.masks` makes them from an image and its masks. An entry may carry
lesion statistics (JSON key "lesions", see `lesionseg.client.lesion_stats`) and small text
attachments; index.html shows both. Several
processes may write into one DIR at once: each entry has its own folder and JSON, and index.html
is rebuilt under a file lock from all JSON files, then replaced atomically.
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import itertools
import json
import os
import sys
from pathlib import Path

import numpy as np

from lesionseg.client.qc.png import write_png
from lesionseg.core import __version__
from lesionseg.core.files import atomic_write_text


def subject_and_dataset(path: Path) -> tuple[str, str]:
    """SCT's guess: the BIDS `sub-*` folder (or the file's folder) and the folder above it."""
    parts = Path(path).resolve().parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i].startswith("sub-"):
            return parts[i], parts[i - 1]
    parent = Path(path).resolve().parent
    return parent.name, parent.parent.name


@dataclasses.dataclass(frozen=True, kw_only=True)
class QcEntry:
    """One QC entry: which command produced what from which input.

    `extra` is merged into the entry's JSON (e.g. "lesions": lesion statistics); `attachments` are
    written into the entry's folder before its JSON and listed there under "attachments"
    (name -> path relative to the QC folder)."""

    command: str
    contrast: str
    fname_in: Path
    fname_seg: Path | None = None
    plane: str = "Axial"
    extra: dict = dataclasses.field(default_factory=dict)
    dataset: str | None = None  # default: guessed from fname_in (subject_and_dataset)
    subject: str | None = None
    attachments: dict[str, str] = dataclasses.field(default_factory=dict)  # file name -> text, in the entry folder
    cmdline: str | None = None  # default: this process's command line


_STAMPS = itertools.count()


def _timestamp() -> str:
    """Unique per entry, also between threads of one batch run in the same microsecond."""
    now = datetime.datetime.now()
    return now.strftime("%Y_%m_%d_%H%M%S.%f") + f"_{os.getpid()}_{next(_STAMPS)}"


def write_entry(qc_dir: Path, entry: QcEntry, background: np.ndarray, overlay: np.ndarray) -> Path:
    """Write one entry's images and JSON, then rebuild index.html; returns the entry's folder."""
    subject, dataset = subject_and_dataset(entry.fname_in)
    subject, dataset = entry.subject or subject, entry.dataset or dataset
    stamp = _timestamp()
    folder = qc_dir / dataset / subject / entry.contrast / entry.command / stamp
    folder.mkdir(parents=True, exist_ok=False)
    write_png(folder / "background_img.png", background)
    write_png(folder / "overlay_img.png", overlay)
    attachments = {}
    for name, text in entry.attachments.items():
        if Path(name).name != name or name.startswith("."):
            raise ValueError(f"attachment name {name!r} must be a plain file name")
        atomic_write_text(folder / name, text)
        attachments[name] = str((folder / name).relative_to(qc_dir))
    record = {
        "cwd": os.getcwd(),
        "cmdline": entry.cmdline if entry.cmdline is not None else " ".join(sys.argv),
        "command": entry.command,
        "sct_version": f"lesionseg {__version__}",
        "dataset": dataset,
        "subject": subject,
        "contrast": entry.contrast,
        "fname_in": str(Path(entry.fname_in).resolve()),
        "fname_seg": str(Path(entry.fname_seg).resolve()) if entry.fname_seg else "",
        "plane": entry.plane,
        "background_img": str((folder / "background_img.png").relative_to(qc_dir)),
        "overlay_img": str((folder / "overlay_img.png").relative_to(qc_dir)),
        "moddate": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
        **({"attachments": attachments} if attachments else {}),
        **entry.extra,
    }
    json_dir = qc_dir / "_json"
    json_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json_dir / f"qc_{stamp}.json", json.dumps(record, indent=1))
    build_index(qc_dir)
    return folder


def load_entries(qc_dir: Path) -> list[dict]:
    entries = []
    for path in sorted((qc_dir / "_json").glob("qc_*.json")):
        try:
            entries.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue  # being written by another process: the next rebuild includes it
    entries.sort(key=lambda e: (e.get("moddate", ""), e.get("background_img", "")))
    return entries


def build_index(qc_dir: Path) -> Path:
    """(Re)write DIR/index.html from every entry's JSON, under an exclusive lock."""
    qc_dir.mkdir(parents=True, exist_ok=True)
    with open(qc_dir / ".index.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries = load_entries(qc_dir)
        data = json.dumps(entries).replace("</", "<\\/")
        atomic_write_text(qc_dir / "index.html", INDEX_TEMPLATE.replace("/*ENTRIES*/[]", data))
    return qc_dir / "index.html"


INDEX_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>lesionseg QC report</title>
<link rel="icon" href="data:,">
<style>
 body{font-family:sans-serif;margin:0;display:flex;height:100vh}
 #list{width:48%;overflow:auto;border-right:1px solid #ccc}
 table{border-collapse:collapse;width:100%;font-size:13px}
 th,td{padding:4px 6px;border-bottom:1px solid #eee;text-align:left}
 tr.sel{background:#ffe9a8} tr:hover{background:#f4f4f4;cursor:pointer}
 #view{flex:1;overflow:auto;padding:8px}
 #stack{position:relative;display:inline-block;background:#000}
 #stack img{display:block;image-rendering:pixelated;max-width:100%}
 #overlay{position:absolute;left:0;top:0}
 .mark-pass{color:#080}.mark-fail{color:#c00}.mark-artifact{color:#c60}
 #help{font-size:12px;color:#555}
 #lesions table{width:auto;margin-top:6px} #lesions td,#lesions th{text-align:right}
 #lesion-summary{font-weight:bold} #lesion-note{font-size:12px;color:#555}
</style></head>
<body>
<div id="list"><table><thead><tr><th>#</th><th>dataset</th><th>subject</th><th>contrast</th><th>command</th><th>date</th><th>lesions</th><th>mark</th></tr></thead>
<tbody id="rows"></tbody></table></div>
<div id="view">
 <div id="help">&uarr;/&darr; or j/k: previous/next &middot; t or space: toggle overlay &middot; f: pass &middot; x: fail &middot; a: artifact &middot; 0: clear
 <button id="export">export marks</button> <button id="toggle">toggle overlay</button></div>
 <h3 id="title"></h3>
 <div id="stack"><img id="background" alt="background"><img id="overlay" alt="overlay"></div>
 <div id="lesions" hidden><div id="lesion-summary"></div><div id="lesion-note"></div>
  <table><thead><tr><th>lesion</th><th>voxels</th><th>volume (mm&sup3;)</th><th>extent x/y/z (mm)</th><th>centroid x/y/z (voxel)</th></tr></thead>
  <tbody id="lesion-rows"></tbody></table></div>
 <div id="attachments"></div>
 <pre id="details"></pre>
</div>
<script>
const ENTRIES = /*ENTRIES*/[];
const KEY = "lesionseg-qc-marks:" + location.pathname;
let marks = {};
try { marks = JSON.parse(localStorage.getItem(KEY) || "{}"); } catch (e) { marks = {}; }
let current = 0, showOverlay = true;
const SYMBOL = {pass: "\\u2713 pass", fail: "\\u2717 fail", artifact: "\\u26a0 artifact"};
function id(e) { return e.background_img; }
function fmt(v, digits) { return Number(v).toFixed(digits); }
function lesionCell(e) {
  const l = e.lesions; if (!l) return "";
  return l.count + " (" + fmt(l.total_volume_mm3, 1) + " mm\u00b3)";
}
function cells(tr, values) {
  values.forEach(v => { const td = document.createElement("td"); td.textContent = v; tr.appendChild(td); });
}
function renderLesions(e) {
  const box = document.getElementById("lesions"), body = document.getElementById("lesion-rows");
  body.innerHTML = "";
  const l = e && e.lesions;
  box.hidden = !l;
  if (!l) return;
  const size = (l.spacing_mm || []).map(v => fmt(v, 2)).join("x");
  document.getElementById("lesion-summary").textContent = l.count + (l.count === 1 ? " lesion" : " lesions") +
    ", total " + fmt(l.total_volume_mm3, 1) + " mm\u00b3";
  document.getElementById("lesion-note").textContent = l.total_voxels + " voxels of " + size + " mm, " +
    l.connectivity + "-connected; x/y/z are the axes of " + (l.mask || "the lesion mask") +
    (l.axis_codes ? " (toward " + l.axis_codes.join("/") + ")" : "");
  (l.per_lesion || []).forEach(p => {
    const tr = document.createElement("tr");
    cells(tr, [p.label, p.voxels, fmt(p.volume_mm3, 1), p.extent_mm.map(v => fmt(v, 1)).join(" / "),
               p.centroid_vox.map(v => fmt(v, 1)).join(" / ")]);
    body.appendChild(tr);
  });
}
function renderAttachments(e) {
  const box = document.getElementById("attachments"); box.innerHTML = "";
  Object.entries((e && e.attachments) || {}).forEach(([name, path]) => {
    const a = document.createElement("a"); a.href = path; a.textContent = name; a.style.marginRight = "1em";
    box.appendChild(a);
  });
}
function render() {
  const rows = document.getElementById("rows");
  rows.innerHTML = "";
  ENTRIES.forEach((e, i) => {
    const tr = document.createElement("tr");
    if (i === current) tr.className = "sel";
    const m = marks[id(e)];
    cells(tr, [i + 1, e.dataset, e.subject, e.contrast, e.command, e.moddate, lesionCell(e)]);
    const td = document.createElement("td");
    if (m) { td.textContent = SYMBOL[m]; td.className = "mark-" + m; }
    tr.appendChild(td);
    tr.addEventListener("click", () => { current = i; render(); });
    rows.appendChild(tr);
  });
  const e = ENTRIES[current];
  renderLesions(e); renderAttachments(e);
  if (!e) { document.getElementById("title").textContent = "no QC entry yet"; return; }
  document.getElementById("title").textContent = (current + 1) + "/" + ENTRIES.length + "  " + e.subject + " " + e.contrast + " " + e.command + " (" + (e.plane || "Axial") + ")";
  document.getElementById("background").src = e.background_img;
  const ov = document.getElementById("overlay");
  ov.src = e.overlay_img; ov.style.display = showOverlay ? "block" : "none";
  document.getElementById("details").textContent = JSON.stringify(e, null, 1);
  const sel = rows.children[current]; if (sel && sel.scrollIntoView) sel.scrollIntoView({block: "nearest"});
}
function mark(value) {
  const e = ENTRIES[current]; if (!e) return;
  if (value) marks[id(e)] = value; else delete marks[id(e)];
  localStorage.setItem(KEY, JSON.stringify(marks)); render();
}
function toggle() { showOverlay = !showOverlay; render(); }
document.addEventListener("keydown", ev => {
  const k = ev.key;
  if (k === "ArrowDown" || k === "j") { current = Math.min(current + 1, ENTRIES.length - 1); }
  else if (k === "ArrowUp" || k === "k") { current = Math.max(current - 1, 0); }
  else if (k === "t" || k === " ") { showOverlay = !showOverlay; }
  else if (k === "f") { return mark("pass"); }
  else if (k === "x") { return mark("fail"); }
  else if (k === "a") { return mark("artifact"); }
  else if (k === "0") { return mark(null); }
  else { return; }
  ev.preventDefault(); render();
});
document.getElementById("toggle").addEventListener("click", toggle);
document.getElementById("export").addEventListener("click", () => {
  const out = ENTRIES.map(e => ({fname_in: e.fname_in, command: e.command, subject: e.subject, qc: marks[id(e)] || ""}));
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([JSON.stringify(out, null, 1)], {type: "application/json"}));
  a.download = "qc_marks.json"; a.click();
});
render();
</script></body></html>
"""
