"""QC reports in SCT's layout (`-qc DIR`), viewable offline in any browser.

    DIR/<dataset>/<subject>/<contrast>/<command>/<timestamp>/background_img.png, overlay_img.png
    DIR/_json/qc_<timestamp>.json      one per entry (SCT's keys)
    DIR/index.html                     every entry; keyboard navigation, overlay toggle, marks

The axial mosaic has one tile per slice, cropped around the cord centre (18 mm radius by default),
in radiological view (patient's right on the left, anterior up); the sagittal view has one panel
per lateral offset from the cord centre, superior up and anterior on the left (SCT's sagittal QC
view, from its "SAL" arrays). The overlay is transparent with lesions in red and the cord (mask or
centerline) in cyan. An entry may carry lesion statistics (JSON key "lesions", see
`lesionseg.client.lesion_stats`) and small text attachments; index.html shows both. Several
processes may write into one DIR at once: each entry has its own folder and JSON, and index.html
is rebuilt under a file lock from all JSON files, then replaced atomically.
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import itertools
import json
import math
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from lesionseg.core import __version__
from lesionseg.client.nifti import atomic_write_text
from lesionseg.client.qc.png import write_png
from lesionseg.core.grid import resample_to_shape

TILE_MM_PER_PX = 0.5
MAX_TILES_PER_ROW = 10
LESION_RGBA = (255, 0, 0, 255)
CORD_RGBA = (0, 255, 255, 160)


def _tile_crop(slice_2d: np.ndarray, cx: float, cy: float, half_x: int, half_y: int) -> np.ndarray:
    nx, ny = slice_2d.shape
    out = np.zeros((2 * half_x, 2 * half_y), slice_2d.dtype)
    x0, y0 = int(round(cx)) - half_x, int(round(cy)) - half_y
    sx, sy = slice(max(x0, 0), min(x0 + 2 * half_x, nx)), slice(max(y0, 0), min(y0 + 2 * half_y, ny))
    if sx.start < sx.stop and sy.start < sy.stop:
        out[sx.start - x0 : sx.stop - x0, sy.start - y0 : sy.stop - y0] = slice_2d[sx, sy]
    return out


def axial_mosaic(
    image: np.ndarray, spacing: Sequence[float], centre_xy: np.ndarray, *,
    lesion: np.ndarray | None = None, cord: np.ndarray | None = None, radius_mm: float = 18.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Background (grayscale uint8) and overlay (RGBA uint8) mosaics of every axial slice.

    Args:
        image: (x, y, z) RPI volume (x toward left, y toward anterior, z toward superior).
        spacing: voxel size in mm.
        centre_xy: (z, 2) cord centre per slice in voxel coordinates.
        lesion, cord: optional (x, y, z) masks drawn red and cyan.
    Returns:
        (rows, cols) background and (rows, cols, 4) overlay, tiles left to right, inferior first.
    """
    nz = image.shape[2]
    half_x = max(1, int(round(radius_mm / spacing[0])))
    half_y = max(1, int(round(radius_mm / spacing[1])))
    tile = max(8, int(round(2 * radius_mm / TILE_MM_PER_PX)))
    per_row = min(MAX_TILES_PER_ROW, nz)
    rows = math.ceil(nz / per_row)
    background = np.zeros((rows * tile, per_row * tile), np.uint8)
    overlay = np.zeros((rows * tile, per_row * tile, 4), np.uint8)
    crops = [_tile_crop(image[:, :, z], *centre_xy[z], half_x, half_y) for z in range(nz)]
    values = np.concatenate([c.ravel() for c in crops])
    lo, hi = np.percentile(values, (1, 99.5)) if values.size else (0.0, 1.0)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    for z in range(nz):
        r, c = divmod(z, per_row)
        window = (slice(r * tile, (r + 1) * tile), slice(c * tile, (c + 1) * tile))

        def view(a: np.ndarray, order: int) -> np.ndarray:
            # (x, y) -> display (row = anterior up, col = x: patient's right on the left)
            return resample_to_shape(a[:, :, None].astype(np.float32), (tile, tile, 1), order=order)[:, :, 0].T[::-1]

        background[window] = np.clip((view(crops[z], 1) - lo) * scale, 0, 255).astype(np.uint8)
        for mask, colour in ((cord, CORD_RGBA), (lesion, LESION_RGBA)):
            if mask is not None:
                drawn = view(_tile_crop(mask[:, :, z], *centre_xy[z], half_x, half_y), 0) > 0.5
                overlay[window][drawn] = colour
    return background, overlay


def cord_centres(cord: np.ndarray) -> np.ndarray:
    """(z, 2) cord centre (x, y) per axial slice of an (x, y, z) mask, in voxel coordinates: the
    centre of mass of each slice, linearly interpolated (and held constant past the ends) over
    slices without cord, as SCT's QC does. Raises ValueError when the mask is empty."""
    nz = cord.shape[2]
    weights = (cord > 0).astype(np.float64)
    counts = weights.sum(axis=(0, 1))
    present = np.flatnonzero(counts)
    if present.size == 0:
        raise ValueError("the cord mask is empty")
    xs = np.arange(cord.shape[0], dtype=np.float64)
    ys = np.arange(cord.shape[1], dtype=np.float64)
    cx = np.einsum("xyz,x->z", weights, xs)[present] / counts[present]
    cy = np.einsum("xyz,y->z", weights, ys)[present] / counts[present]
    z = np.arange(nz)
    return np.stack([np.interp(z, present, cx), np.interp(z, present, cy)], axis=1)


SAGITTAL_GAP_PX = 4


def sagittal_mosaic(
    image: np.ndarray, spacing: Sequence[float], centre_xy: np.ndarray, *,
    lesion: np.ndarray | None = None, cord: np.ndarray | None = None,
    offsets_mm: Sequence[float] = (-2.0, 0.0, 2.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Background (grayscale uint8) and overlay (RGBA uint8) of mid-cord sagittal panels.

    Each panel is a sagittal plane that follows the cord left-right: its row for slice z is taken
    at x = centre_xy[z, 0] + offset (mm converted to voxels, nearest voxel). Panels are resampled
    to TILE_MM_PER_PX (true aspect ratio) and shown as SCT shows sagittal QC: superior up,
    anterior on the left (patient facing left), posterior on the right.

    Args:
        image: (x, y, z) RPI volume (x toward left, y toward anterior, z toward superior).
        spacing: voxel size in mm along (x, y, z).
        centre_xy: (z, 2) cord centre per slice in voxel coordinates.
        lesion, cord: optional (x, y, z) masks drawn red and cyan.
        offsets_mm: lateral offsets of the panels from the cord centre, toward the patient's left
            (+) or right (-); panels are placed left to right in this order.
    Returns:
        (rows, cols) background and (rows, cols, 4) overlay; rows = superior-inferior extent,
        cols = panels of the anterior-posterior extent separated by SAGITTAL_GAP_PX black columns.
    """
    nx, ny, nz = image.shape
    rows = max(8, int(round(nz * spacing[2] / TILE_MM_PER_PX)))
    cols = max(8, int(round(ny * spacing[1] / TILE_MM_PER_PX)))
    width = len(offsets_mm) * cols + (len(offsets_mm) - 1) * SAGITTAL_GAP_PX
    background = np.zeros((rows, width), np.uint8)
    overlay = np.zeros((rows, width, 4), np.uint8)
    z = np.arange(nz)

    def plane(volume: np.ndarray, xs: np.ndarray) -> np.ndarray:
        return volume[xs, :, z].T  # (y, z): row z of the plane at its own x

    def view(a: np.ndarray, order: int) -> np.ndarray:
        # (y, z) -> display (row 0 = superior, col 0 = anterior)
        return resample_to_shape(a[:, :, None].astype(np.float32), (cols, rows, 1), order=order)[:, :, 0].T[::-1, ::-1]

    planes_x = [np.clip(np.rint(centre_xy[:, 0] + off / spacing[0]).astype(int), 0, nx - 1) for off in offsets_mm]
    grey = [plane(image, xs) for xs in planes_x]
    lo, hi = np.percentile(np.concatenate([g.ravel() for g in grey]), (1, 99.5))
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    for k, xs in enumerate(planes_x):
        window = (slice(None), slice(k * (cols + SAGITTAL_GAP_PX), k * (cols + SAGITTAL_GAP_PX) + cols))
        background[window] = np.clip((view(grey[k], 1) - lo) * scale, 0, 255).astype(np.uint8)
        for mask, colour in ((cord, CORD_RGBA), (lesion, LESION_RGBA)):
            if mask is not None:
                overlay[window][view(plane(mask, xs), 0) > 0.5] = colour
    return background, overlay


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
        "cmdline": " ".join(sys.argv),
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
