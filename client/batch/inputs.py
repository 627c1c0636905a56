"""Which images a batch run segments: explicit paths, glob patterns, folders and BIDS datasets.

A BIDS dataset is a folder with `dataset_description.json` (or any folder given with `--bids`
filters). Its images are `sub-<label>/[ses-<label>/]anat/*.nii[.gz]`, `derivatives/` and
`sourcedata/` excluded, selected by entity filters such as ``sub=01,02``, ``ses=M0``,
``acq=sag`` and ``suffix=T2w`` (the last `_`-separated part of the name).

A file that belongs to each subject (a cord segmentation used as centerline, say) is named by a
pattern, resolved per image by `lesionseg.client.subject_files.subject_file`.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from lesionseg.client.subject_files import is_bids, label
from lesionseg.core.nifti import NIFTI_SUFFIXES, stem
from lesionseg.core.errors import UsageError

logger = logging.getLogger(__name__)

# Outputs of SCT and lesionseg, never taken as inputs when a folder is scanned.
OUTPUT_ENDINGS = ("_seg", "_lesionseg", "_RPI_seg", "_res_RPI_seg", "_lesion_seg", "_sc_seg", "_centerline")
_GLOB_CHARS = re.compile(r"[*?\[]")
_ENTITY = re.compile(r"^[a-zA-Z0-9]+$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Subject:
    """One image of a batch: its `path` and `dataset`, the BIDS dataset or scanned folder it came
    from (None for explicit paths). Its outputs mirror `relative`, its folder in the dataset."""

    path: Path
    dataset: Path | None = None

    @property
    def relative(self) -> Path:
        return self.path.parent.relative_to(self.dataset) if self.dataset is not None else Path(".")

    @property
    def label(self) -> str:
        return label(self.path, self.dataset)


def parse_bids_filters(items: Sequence[str] | None) -> dict[str, set[str]]:
    """``["sub=01,02", "suffix=T2w"]`` -> {"sub": {"01", "02"}, "suffix": {"T2w"}}; labels given with
    their prefix (``sub=sub-01``) are accepted too."""
    filters: dict[str, set[str]] = {}
    for item in items or ():
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip() or not _ENTITY.match(key):
            raise UsageError(f"--bids {item!r} is not ENTITY=VALUE[,VALUE...] (e.g. sub=01,02 or suffix=T2w)")
        labels = {v.strip().removeprefix(f"{key}-") for v in values.split(",") if v.strip()}
        filters.setdefault(key, set()).update(labels)
    return filters


def entities(path: Path) -> dict[str, str]:
    """BIDS entities of a file name: sub-01_ses-M0_acq-sag_T2w.nii.gz -> {sub: 01, ses: M0, acq: sag, suffix: T2w}."""
    parts = stem(path).split("_")
    found = {}
    for part in parts[:-1]:
        key, sep, value = part.partition("-")
        if sep:
            found[key] = value
    found["suffix"] = parts[-1]
    return found


def is_nifti(path: Path) -> bool:
    return path.name.endswith(NIFTI_SUFFIXES)


def is_output(path: Path) -> bool:
    return stem(path).endswith(OUTPUT_ENDINGS)


def bids_images(root: Path, filters: Mapping[str, set[str]]) -> list[Subject]:
    """The anatomical images of the BIDS dataset at `root` that match every filter."""
    found = []
    for path in sorted(root.glob("sub-*/anat/*")) + sorted(root.glob("sub-*/ses-*/anat/*")):
        if not is_nifti(path) or is_output(path):
            continue
        ents = entities(path)
        if all(ents.get(key) in values for key, values in filters.items()):
            found.append(Subject(path=path, dataset=root))
    return found


def folder_images(root: Path) -> list[Subject]:
    """NIfTI images anywhere under `root` (hidden folders, derivatives/ and known outputs excluded)."""
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") or part in ("derivatives", "sourcedata") for part in rel.parts[:-1]):
            continue
        if path.is_file() and is_nifti(path) and not is_output(path) and not path.name.startswith("."):
            found.append(Subject(path=path, dataset=root))
    return found


def collect_inputs(specs: Iterable[str | Path], *, bids: Sequence[str] | None = None) -> list[Subject]:
    """Expand `specs` (files, glob patterns, folders, BIDS datasets) into images, in order, once each.

    A file that does not exist is kept (its subject fails with a clear message and the others
    run); a pattern or folder that yields nothing is a usage error.

    Raises:
        UsageError: bad --bids filters, or a pattern/folder with no image.
    """
    filters = parse_bids_filters(bids)
    images: list[Subject] = []
    for spec in specs:
        text = str(spec)
        path = Path(text).expanduser()
        if path.is_dir():
            if bids is not None or is_bids(path):
                found = bids_images(path, filters)
                what = f"BIDS dataset {path}" + (f" (filters {' '.join(bids)})" if bids else "")
            else:
                found, what = folder_images(path), f"folder {path}"
            if not found:
                raise UsageError(f"{what}: no NIfTI image found")
            images.extend(found)
        elif not path.exists() and _GLOB_CHARS.search(text):
            matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True))
            found = [Subject(path=m) for m in matches if m.is_file() and is_nifti(m)]
            if not found:
                raise UsageError(f"pattern {text!r} matches no NIfTI image")
            images.extend(found)
        else:
            images.append(Subject(path=path))
    unique: dict[Path, Subject] = {}
    for image in images:
        unique.setdefault(image.path.resolve(), image)
    return list(unique.values())


def is_batch(specs: Sequence[str | Path], bids: Sequence[str] | None) -> bool:
    """Whether a command line names a cohort (several inputs, a folder, a pattern or --bids)."""
    if bids is not None or len(specs) != 1:
        return True
    path = Path(str(specs[0]))
    if path.is_dir():
        from lesionseg.client.images import is_dicom

        return not is_dicom(path)  # a DICOM series folder is one image
    return not path.exists() and bool(_GLOB_CHARS.search(str(specs[0])))
