"""Minimal PNG writer (8-bit grayscale or RGB/RGBA) so QC reports need no imaging library."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

_COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 image: (rows, cols) grayscale, (rows, cols, 3) RGB or (rows, cols, 4) RGBA."""
    if image.dtype != np.uint8:
        raise ValueError(f"PNG needs uint8 pixels, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    rows, cols, channels = image.shape
    if channels not in _COLOR_TYPES:
        raise ValueError(f"PNG needs 1, 3 or 4 channels, got {channels}")
    raw = b"".join(b"\x00" + image[r].tobytes() for r in range(rows))  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", cols, rows, 8, _COLOR_TYPES[channels], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def write_png(path: Path, image: np.ndarray) -> Path:
    path.write_bytes(encode_png(image))
    return path
