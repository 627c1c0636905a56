"""What travels between the client and the server, agreed on both sides.

- Images are 3D FP32 volumes of at most `MAX_VOXELS` voxels (1 GiB), so no message comes near
  gRPC's 2 GiB cap; the server refuses larger ones, the client refuses to load them.
- Soft maps (probabilities, vote fractions, all in [0, 1]) travel as UINT8 = round(255 * value):
  `to_uint8` on the server, `from_uint8` on the client. Never full-resolution logits.
"""

from __future__ import annotations

import numpy as np

MAX_VOXELS = 512 * 512 * 1024
UINT8_SCALE = 255


def to_uint8(soft: np.ndarray) -> np.ndarray:
    """A soft map in [0, 1] (any shape) as uint8 round(255 * value), clipped to 0..255."""
    return np.clip(np.rint(np.asarray(soft) * UINT8_SCALE), 0, UINT8_SCALE).astype(np.uint8)


def from_uint8(quantised: np.ndarray) -> np.ndarray:
    """The float32 soft map in [0, 1] of a `to_uint8` array."""
    return np.asarray(quantised).astype(np.float32) / UINT8_SCALE
