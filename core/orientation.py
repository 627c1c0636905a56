"""Reorientation between a NIfTI's own axes and a target orientation, SCT and nibabel codes.

SCT names the side each axis comes FROM, nibabel the side it goes TO: SCT "RPI" is nibabel
("L", "A", "S"), SCT "LPI" is nibabel ("R", "A", "S"). Getting this wrong flips every model.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lesionseg.core.errors import UsageError
from lesionseg.core.nibabel_import import nibabel

ornt = nibabel.orientations

_AXIS = {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}
_OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}


def sct_to_nib(code: str) -> tuple[str, str, str]:
    """SCT orientation string ("RPI") -> nibabel axis codes (("L", "A", "S"))."""
    code = code.upper()
    if len(code) != 3 or any(c not in _OPPOSITE for c in code) or sorted(_AXIS[c] for c in code) != [0, 1, 2]:
        raise UsageError(f"{code!r} is not an orientation like RPI or LPI")
    return tuple(_OPPOSITE[c] for c in code)  # type: ignore[return-value]  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class Reorientation:
    """How an array in the image's own orientation maps onto a target orientation and back."""

    transform: np.ndarray  # nibabel ornt transform from source to target
    shape: tuple[int, ...]  # the source array shape (3D)

    def forward(self, data: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(ornt.apply_orientation(data, self.transform))

    def backward(self, data: np.ndarray) -> np.ndarray:
        back = _inverse(self.transform)
        return np.ascontiguousarray(ornt.apply_orientation(data, back))

    def target_affine(self, affine: np.ndarray) -> np.ndarray:
        """The affine of the reoriented array (same world positions)."""
        return affine @ ornt.inv_ornt_aff(self.transform, self.shape)

    def forward_spacing(self, spacing: tuple[float, ...]) -> tuple[float, ...]:
        order = np.argsort(self.transform[:, 0])
        return tuple(float(spacing[i]) for i in order)


def _inverse(transform: np.ndarray) -> np.ndarray:
    """The ornt transform undoing `transform`."""
    inverse = np.zeros_like(transform)
    for src_axis, (dst_axis, flip) in enumerate(transform):
        inverse[int(dst_axis)] = (src_axis, flip)
    return inverse


def reorientation(affine: np.ndarray, shape: tuple[int, ...], target_nib: tuple[str, str, str]) -> Reorientation:
    """The reorientation of an image with `affine` onto nibabel axis codes `target_nib`."""
    source = ornt.io_orientation(affine)
    return Reorientation(transform=ornt.ornt_transform(source, ornt.axcodes2ornt(target_nib)), shape=tuple(shape[:3]))


def axcodes(affine: np.ndarray) -> tuple[str, ...]:
    return tuple(ornt.aff2axcodes(affine))
