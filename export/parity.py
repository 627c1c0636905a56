"""Parity reports: a reduced-precision network's masks against the FP32 reference, image by image.

Issue 13's bar for writing a precision into a repository: on every image, Dice vs FP32 >= 0.99,
the same number of lesions (26-connected components, as the lesion statistics count them) and a
total lesion volume within 2 %. A report keeps the numbers per image, the bar, the runtime
versions and what was compared, so `lesionseg status --models` can show it and an export can
refuse a failing precision with its failing numbers in one line.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Mapping, Sequence

import numpy as np

from lesionseg.core.lesions import label_lesions


@dataclasses.dataclass(frozen=True, kw_only=True)
class ParityBar:
    """What every image must meet."""

    min_dice: float = 0.99
    max_volume_change: float = 0.02  # relative to the reference's total lesion volume
    same_lesion_count: bool = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageParity:
    """One image: Dice, lesion counts and total volumes (mm3) of reference and candidate masks."""

    image: str
    dice: float
    lesions_reference: int
    lesions_candidate: int
    volume_reference_mm3: float
    volume_candidate_mm3: float

    @property
    def volume_change(self) -> float:
        """|candidate - reference| / reference volume (0 when both are empty, inf when only the
        reference is)."""
        if self.volume_reference_mm3 == 0:
            return 0.0 if self.volume_candidate_mm3 == 0 else math.inf
        return abs(self.volume_candidate_mm3 - self.volume_reference_mm3) / self.volume_reference_mm3

    def failures(self, bar: ParityBar) -> list[str]:
        """What misses `bar`, each as a short phrase naming the number and the limit."""
        found = []
        if self.dice < bar.min_dice:
            found.append(f"Dice {self.dice:.4f} < {bar.min_dice}")
        if bar.same_lesion_count and self.lesions_candidate != self.lesions_reference:
            found.append(f"{self.lesions_candidate} lesions, FP32 {self.lesions_reference}")
        if self.volume_change > bar.max_volume_change:
            found.append(f"volume {self.volume_candidate_mm3:.1f} vs {self.volume_reference_mm3:.1f} mm3 "
                         f"({self.volume_change:.1%} > {bar.max_volume_change:.0%})")
        return found


def dice(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Dice of two masks (1.0 when both are empty)."""
    a, b = np.asarray(reference, bool), np.asarray(candidate, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def lesion_count(mask: np.ndarray) -> int:
    """26-connected lesions of a 3D mask (`lesionseg.core.lesions.label_lesions`)."""
    return label_lesions(np.asarray(mask))[1]


def compare_masks(image: str, reference: np.ndarray, candidate: np.ndarray, *, voxel_mm3: float) -> ImageParity:
    """The parity of `candidate` against `reference`, two (x, y, z) masks on one grid whose voxels
    are `voxel_mm3` cubic millimetres.

    Raises:
        ValueError: the masks' shapes differ.
    """
    if np.shape(reference) != np.shape(candidate):
        raise ValueError(f"{image}: masks of shapes {np.shape(reference)} and {np.shape(candidate)} cannot be compared")
    return ImageParity(image=image, dice=dice(reference, candidate), lesions_reference=lesion_count(reference),
                       lesions_candidate=lesion_count(candidate),
                       volume_reference_mm3=float(np.count_nonzero(reference)) * voxel_mm3,
                       volume_candidate_mm3=float(np.count_nonzero(candidate)) * voxel_mm3)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ParityReport:
    """A precision's parity on a set of images.

    Attributes:
        precision: the candidate precision ("bf16", "int8", "fp16").
        runtime: what ran the candidate (e.g. "openvino 2026.4.1").
        reference: what ran the FP32 reference (e.g. "onnxruntime 1.32.0 fp32").
        images: one entry per image.
        notes: anything a reader must know (proxies, calibration images that are also test images).
        data: the folder the images were found in (their names are relative to it).
        cpu: the CPU the candidate ran on and its reduced-precision instructions
            (`lesionseg.server.backend.runtimes.cpu_description`; "" for the FP16 GPU proxy).
    """

    precision: str
    runtime: str
    reference: str
    images: Sequence[ImageParity]
    bar: ParityBar = dataclasses.field(default_factory=ParityBar)
    notes: Sequence[str] = ()
    data: str = ""
    cpu: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.images) and not any(image.failures(self.bar) for image in self.images)

    def failure_line(self) -> str:
        """One line naming every failing image and number ("" when the report passes)."""
        if not self.images:
            return f"{self.precision} parity has no images"
        failing = [f"{image.image}: {', '.join(problems)}" for image in self.images if (problems := image.failures(self.bar))]
        return f"{self.precision} fails its parity against FP32 on {len(failing)} of {len(self.images)} images: " + \
            "; ".join(failing) if failing else ""

    def summary(self) -> str:
        """One line for a config parameter and `lesionseg status --models`: the passing numbers,
        or the failure line."""
        if not self.passed:
            return self.failure_line()
        worst = min(image.dice for image in self.images)
        change = max(image.volume_change for image in self.images)
        return (f"{self.precision} parity passed on {len(self.images)} images: min Dice {worst:.4f}, "
                f"lesion counts equal, max volume change {change:.2%}" + (f"; computed on {self.cpu}" if self.cpu else ""))

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["passed"] = self.passed
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ParityReport:
        data: Mapping[str, Any] = json.loads(text)
        return cls(precision=data["precision"], runtime=data["runtime"], reference=data["reference"],
                   images=[ImageParity(**image) for image in data["images"]], bar=ParityBar(**data["bar"]),
                   notes=tuple(data.get("notes", ())), data=data.get("data", ""), cpu=data.get("cpu", ""))
