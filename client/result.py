"""What segmenting one image gives, and where it goes: `Result`, `Outputs`, and the `Job` every task
family is.

A `Job` (`lesionseg.client.legacy.LegacyJob`, `lesionseg.client.task.TaskJob`) has one way to
segment: `segment(image) -> Result`; the command line, a batch and the gateway call only that,
then `lesionseg.client.writer` turns the `Result` into files (`Outputs`, which the job names).

Every array of a `Result` is (x, y, z) on the input image's grid and axes, except the `maps`,
which say their own grid.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Protocol

import numpy as np

from lesionseg.client.lesion_stats import LesionStats, lesion_voxels
from lesionseg.core.image import Image
from lesionseg.core.interface import ModelInfo

#: the key of SCT 7's `_cropbox` file (sc-crop's box, 1 inside) among a result's maps
CROPBOX = "cropbox"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Map:
    """A soft map on a grid of its own: `data` float32 in [0, 1] (x, y, z), `affine` voxel -> RAS+ mm."""

    data: np.ndarray
    affine: np.ndarray


@dataclasses.dataclass(frozen=True, kw_only=True)
class Result:
    """One image's segmentation.

    - `masks`: per written class, a uint8 mask (0/1 or labels) or a float32 soft map in [0, 1];
      `lesion` names the lesion class among them (None: the task segments no lesion), and
      `cord_class` the cord class (None: no cord class);
    - `cord`: a uint8 cord mask (a cord class, the crop's cord or a cord task's), the SEG's cord
      segment and the SR's cord volume; `centerline`: the cord centre per slice as a uint8 mask
      (the legacy pipeline's), which QC follows instead of `cord`; `cord_source` names what QC
      follows when it is not a written class;
    - `maps`: soft maps written beside the masks on grids of their own (the legacy `_RPI_seg` maps);
    - `stats`: the lesions of `masks[lesion]` (a soft map's voxels >= 0.5), computed once;
    - `probabilities`: when the job was asked for them, each class's probability map (float32 in
      [0, 1], quantised to 1/255 on the wire);
    - `model`: the served model; `source_note`: what the sidecar adds to its source (a crop);
      `server`: the address of the server that answered.
    """

    image: Image
    model: ModelInfo
    masks: dict[str, np.ndarray]
    lesion: str | None = None
    cord_class: str | None = None
    cord: np.ndarray | None = None
    centerline: np.ndarray | None = None
    cord_source: str = "cord"
    maps: dict[str, Map] = dataclasses.field(default_factory=dict)
    stats: LesionStats | None = None
    probabilities: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    source_note: str = ""
    server: str = ""

    @property
    def lesion_mask(self) -> np.ndarray | None:
        """The lesion voxels (uint8 0/1), or None."""
        return None if self.lesion is None else lesion_voxels(self.masks[self.lesion])

    @property
    def note(self) -> str:
        """The one-line summary of a batch table: the lesions, else each class's voxels."""
        if self.stats is not None:
            return f"{self.stats.count} lesions, {self.stats.total_volume_mm3:.1f} mm3"
        return ", ".join(f"{name}: {int(np.count_nonzero(lesion_voxels(m)))} vox" for name, m in self.masks.items())


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outputs:
    """Where one image's results go, named by its job before it is segmented.

    `masks` and `maps`: NIfTI files written, by `Result.masks` / `Result.maps` key (`named`: every
    class's file name, also when none is written: what QC names); `generated_by`: each
    mask gets SCT's JSON sidecar; `lesion_sidecars`: the lesion statistics' TSV and JSON;
    `dicom`: the DICOM files ("seg", "sr" and the QC capture "qc"), in `folder`; `qc`: the QC
    report folder, its entry named by `command` and `contrast`.
    """

    masks: dict[str, Path] = dataclasses.field(default_factory=dict)
    named: dict[str, Path] = dataclasses.field(default_factory=dict)
    maps: dict[str, Path] = dataclasses.field(default_factory=dict)
    generated_by: bool = False
    lesion_sidecars: tuple[Path, Path] | None = None
    dicom: dict[str, Path] = dataclasses.field(default_factory=dict)
    folder: Path = Path(".")
    qc: Path | None = None
    command: str = ""
    contrast: str = ""
    #: the lesion mask's file as QC and the lesion JSON name it (also when only DICOM is written)
    lesion_file: Path | None = None

    def sidecar(self, mask: Path) -> Path:
        """The JSON sidecar (GeneratedBy) of a mask file."""
        from lesionseg.core.nifti import stem

        return mask.with_name(stem(mask) + ".json")

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file written, in the order they are listed (not the QC entry, a folder of its own)."""
        found = [*self.masks.values(), *self.maps.values()]
        if self.generated_by:
            found += [self.sidecar(p) for p in self.masks.values()]
        found += list(self.lesion_sidecars or ()) + list(self.dicom.values())
        return tuple(found)

    @property
    def grid_files(self) -> tuple[Path, ...]:
        """The NIfTI files on the input's grid (what --resume checks the shape of)."""
        return tuple(self.masks.values())


class Job(Protocol):
    """A task family's segmentation of one image (see the module docstring)."""

    @property
    def model(self) -> str:
        """The served model every image needs."""

    @property
    def description(self) -> str:
        """How progress messages name the job."""

    def outputs(self, path: Path, folder: Path | None, *, output: Path | None = None) -> Outputs:
        """The files of the image at `path` in `folder` (None: the job's default), or `output`."""

    def segment(self, image: Image) -> Result:
        """Segment one loaded image.

        Raises:
            LesionsegError: one line naming the image and the problem.
        """
