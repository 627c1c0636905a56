"""sct_deepseg's mask post-processing: threshold, largest components, hole filling, small-object removal.

Masks are (x, y, z) arrays; volumes use the voxel size in mm.
"""

from __future__ import annotations

import re

import numpy as np

from lesionseg.core.errors import UsageError

#: 6-connectivity (voxels touching by a face), as SCT's label-based tools
_STRUCTURE = np.array([[[0, 0, 0], [0, 1, 0], [0, 0, 0]], [[0, 1, 0], [1, 1, 1], [0, 1, 0]], [[0, 0, 0], [0, 1, 0], [0, 0, 0]]], bool)


def threshold(prob: np.ndarray, value: float) -> np.ndarray:
    """Binarise: strictly greater than `value`."""
    return (prob > value).astype(np.uint8)


def keep_largest(mask: np.ndarray, n: int) -> np.ndarray:
    """Keep the `n` largest connected components (n >= 1)."""
    from scipy import ndimage

    labels, count = ndimage.label(mask > 0, structure=_STRUCTURE)
    if count <= n:
        return (mask > 0).astype(np.uint8)
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.argsort(sizes)[::-1][:n] + 1
    return np.isin(labels, keep).astype(np.uint8)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed holes in 3D."""
    from scipy import ndimage

    return ndimage.binary_fill_holes(mask > 0).astype(np.uint8)


def parse_size(text: str) -> tuple[float, str]:
    """"10", "10vox" -> (10, "vox"); "5.5mm3" -> (5.5, "mm3")."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(mm3|vox)?\s*", text)
    if not match:
        raise UsageError(f"-remove-small {text!r}: expected a number with an optional unit mm3 or vox (e.g. 10mm3)")
    return float(match.group(1)), match.group(2) or "vox"


def remove_small(mask: np.ndarray, size: float, unit: str, spacing: tuple[float, float, float]) -> np.ndarray:
    """Drop connected components smaller than `size` voxels or mm3."""
    from scipy import ndimage

    labels, count = ndimage.label(mask > 0, structure=_STRUCTURE)
    if count == 0:
        return (mask > 0).astype(np.uint8)
    sizes = np.bincount(labels.ravel())[1:].astype(float)
    if unit == "mm3":
        sizes *= float(np.prod(spacing))
    keep = np.flatnonzero(sizes >= size) + 1
    return np.isin(labels, keep).astype(np.uint8)
