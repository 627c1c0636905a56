"""QC report files: PNG encoding, mosaic geometry, SCT layout, concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from lesionseg.client.qc.mosaic import axial_mosaic
from lesionseg.client.qc.png import encode_png
from lesionseg.client.qc.report import QcEntry, build_index, load_entries, subject_and_dataset, write_entry


def decode_png(data: bytes) -> tuple[int, int, int, bytes]:
    """(width, height, colour type, raw scanlines) of a PNG, checking every chunk's CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert header is not None
    return header[0], header[1], header[3], zlib.decompress(idat)


def test_png_round_trip() -> None:
    image = (np.arange(6 * 5 * 3) % 256).astype(np.uint8).reshape(6, 5, 3)
    width, height, colour, raw = decode_png(encode_png(image))
    assert (width, height, colour) == (5, 6, 2)
    rows = [raw[r * 16 + 1 : (r + 1) * 16] for r in range(6)]
    assert b"".join(rows) == image.tobytes()
    with pytest.raises(ValueError):
        encode_png(image.astype(np.float32))


def test_mosaic_has_one_tile_per_slice_centred_on_the_cord() -> None:
    image = np.zeros((100, 80, 12), np.float32)
    image[40:50, 30:40, :] = 100  # a bright "cord", centre (44.5, 34.5)
    lesion = np.zeros(image.shape, np.uint8)
    lesion[44, 34, 5] = 1
    centre = np.tile([44.5, 34.5], (12, 1))
    background, overlay = axial_mosaic(image, (0.5, 0.5, 3.0), centre, lesion=lesion, radius_mm=9.0)
    tile = 36  # 2 * 9 mm at 0.5 mm per pixel
    assert background.shape == (2 * tile, 10 * tile) and overlay.shape == (2 * tile, 10 * tile, 4)
    first = background[:tile, :tile]
    assert first[tile // 2, tile // 2] == 255 and first[0, 0] == 0  # the cord is in the middle
    red = np.argwhere(overlay[..., 0] == 255)
    assert len(red) and all(tile * 5 <= c < tile * 6 for _, c in red)  # lesion only on slice 5's tile
    assert background[tile:, 2 * tile :].max() == 0  # unused tiles stay empty


def test_subject_and_dataset_from_bids_path(tmp_path: Path) -> None:
    path = tmp_path / "ds" / "sub-07" / "anat" / "sub-07_T2w.nii.gz"
    assert subject_and_dataset(path) == ("sub-07", "ds")
    assert subject_and_dataset(tmp_path / "study" / "t2s" / "t2s.nii.gz") == ("t2s", "study")


def _write(args: tuple[str, int]) -> None:
    qc_dir, index = args
    image = np.ones((20, 20, 3), np.float32)
    entry = QcEntry(command="deepseg-lesion", contrast="t2s", fname_in=Path(qc_dir).parent / f"sub-{index:02d}" / "anat" / "img.nii.gz")
    background, overlay = axial_mosaic(image, (1.0, 1.0, 1.0), np.full((3, 2), 10.0))
    write_entry(Path(qc_dir), entry, background, overlay)


def test_sct_layout_and_concurrent_writers_lose_no_entry(tmp_path: Path) -> None:
    qc_dir = tmp_path / "qc"
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(_write, [(str(qc_dir), i) for i in range(16)])
    entries = load_entries(qc_dir)
    assert sorted(e["subject"] for e in entries) == [f"sub-{i:02d}" for i in range(16)]
    for e in entries:
        assert e["dataset"] == tmp_path.name and e["contrast"] == "t2s" and e["command"] == "deepseg-lesion"
        assert set(e) >= {"cwd", "cmdline", "command", "sct_version", "dataset", "subject", "contrast", "fname_in", "plane", "moddate"}
        for key in ("background_img", "overlay_img"):
            parts = Path(e[key]).parts
            assert parts[:4] == (tmp_path.name, e["subject"], "t2s", "deepseg-lesion") and (qc_dir / e[key]).is_file()
    html = (qc_dir / "index.html").read_text()
    embedded = json.loads(html.split("const ENTRIES = ", 1)[1].split(";\n", 1)[0])
    assert len(embedded) == 16  # the last rebuild saw every entry
    assert len(list((qc_dir / "_json").glob("qc_*.json"))) == 16
    assert "https://" not in html and "http://" not in html  # works offline: no CDN
    build_index(qc_dir)  # rebuilding is idempotent
    assert (qc_dir / "index.html").read_text() == html


def test_ortho_box_outlines_the_box_in_three_planes() -> None:
    """SCT 7's sc_crop entry: sagittal, coronal and axial planes through the box's centre at
    0.5 mm per pixel, the box's outline yellow; its size in pixels is its size in mm x 2."""
    from lesionseg.client.qc.mosaic import BOX_RGBA, ORTHO_GAP_PX, ortho_box

    image = np.random.default_rng(0).random((40, 30, 12)).astype(np.float32)
    box = np.zeros(image.shape, np.uint8)
    box[5:25, 8:20, 2:10] = 1  # RPI: 20 x 12 x 8 voxels of 1 x 1 x 2 mm
    background, overlay = ortho_box(image, (1.0, 1.0, 2.0), box)
    widths = [30 * 2, 40 * 2, 40 * 2]  # sagittal: A-P; coronal and axial: R-L
    assert background.shape == (max(12 * 4, 30 * 2), sum(widths) + 2 * ORTHO_GAP_PX) and overlay.shape == (*background.shape, 4)
    yellow = np.all(overlay == BOX_RGBA, axis=-1)
    starts = np.cumsum([0, *[w + ORTHO_GAP_PX for w in widths[:-1]]])
    sizes = []
    for start, width in zip(starts, widths):
        found = np.argwhere(yellow[:, start:start + width])
        sizes.append(tuple(int(v) for v in found.max(0) - found.min(0) + 1))
    assert sizes == [(8 * 4, 12 * 2), (8 * 4, 20 * 2), (12 * 2, 20 * 2)]  # (rows, cols) of each outline
    axial = yellow[:, starts[2]:starts[2] + widths[2]]
    assert axial[found.min(0)[0] + 3, found.min(0)[1] + 3] == 0  # an outline, not a filled box
