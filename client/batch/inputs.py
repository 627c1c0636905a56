"""Which images a batch run segments: explicit paths, glob patterns, folders and BIDS datasets.

A BIDS dataset is a folder with `dataset_description.json` (or any folder given with `--bids`
filters). Its images are `sub-<label>/[ses-<label>/]anat/*.nii[.gz]`, `derivatives/` and
`sourcedata/` excluded, selected by entity filters such as ``sub=01,02``, ``ses=M0``,
``acq=sag`` and ``suffix=T2w`` (the last `_`-separated part of the name).

A file that belongs to each subject (a cord segmentation used as centerline, say) is named by a
pattern, resolved per image by `subject_file`.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import re
import string
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from lesionseg.core.nifti import NIFTI_SUFFIXES, stem
from lesionseg.core.errors import InputError, UsageError

logger = logging.getLogger(__name__)

# Outputs of SCT and lesionseg, never taken as inputs when a folder is scanned.
OUTPUT_ENDINGS = ("_seg", "_lesionseg", "_RPI_seg", "_res_RPI_seg", "_lesion_seg", "_sc_seg", "_centerline")
_GLOB_CHARS = re.compile(r"[*?\[]")
_ENTITY = re.compile(r"^[a-zA-Z0-9]+$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class InputImage:
    """One image of a batch: its `path`; `root`, the dataset or scanned folder it came from (None
    for explicit paths); `relative`, its folder relative to `root` ('.' for explicit paths), used
    to mirror the layout in -ofolder."""

    path: Path
    relative: Path = Path(".")
    root: Path | None = None

    @property
    def label(self) -> str:
        return str(self.relative / self.path.name) if self.relative != Path(".") else str(self.path)


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


def is_bids(folder: Path) -> bool:
    return (folder / "dataset_description.json").is_file()


def bids_images(root: Path, filters: Mapping[str, set[str]]) -> list[InputImage]:
    """The anatomical images of the BIDS dataset at `root` that match every filter."""
    found = []
    for path in sorted(root.glob("sub-*/anat/*")) + sorted(root.glob("sub-*/ses-*/anat/*")):
        if not is_nifti(path) or is_output(path):
            continue
        ents = entities(path)
        if all(ents.get(key) in values for key, values in filters.items()):
            found.append(InputImage(path=path, relative=path.parent.relative_to(root), root=root))
    return found


def folder_images(root: Path) -> list[InputImage]:
    """NIfTI images anywhere under `root` (hidden folders, derivatives/ and known outputs excluded)."""
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") or part in ("derivatives", "sourcedata") for part in rel.parts[:-1]):
            continue
        if path.is_file() and is_nifti(path) and not is_output(path) and not path.name.startswith("."):
            found.append(InputImage(path=path, relative=rel.parent, root=root))
    return found


def collect_inputs(specs: Iterable[str | Path], *, bids: Sequence[str] | None = None) -> list[InputImage]:
    """Expand `specs` (files, glob patterns, folders, BIDS datasets) into images, in order, once each.

    A file that does not exist is kept (its subject fails with a clear message and the others
    run); a pattern or folder that yields nothing is a usage error.

    Raises:
        UsageError: bad --bids filters, or a pattern/folder with no image.
    """
    filters = parse_bids_filters(bids)
    images: list[InputImage] = []
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
            found = [InputImage(path=m) for m in matches if m.is_file() and is_nifti(m)]
            if not found:
                raise UsageError(f"pattern {text!r} matches no NIfTI image")
            images.extend(found)
        else:
            images.append(InputImage(path=path))
    unique: dict[Path, InputImage] = {}
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


#: `subject_file`'s shorthand for the BIDS derivatives layout of cord segmentations.
BIDS_LABELS = "{dataset}/derivatives/labels/{relative}/{stem}_seg.nii.gz"
PLACEHOLDERS = ("folder", "stem", "dataset", "relative")


def check_pattern(pattern: str, *, option: str) -> str:
    """`pattern` with the `bids` shorthand expanded, checked for unknown or malformed placeholders.

    Raises:
        UsageError: a placeholder other than {folder}, {stem}, {dataset}, {relative}.
    """
    text = BIDS_LABELS if pattern == "bids" else pattern
    try:
        fields = [name for _, name, spec, conv in string.Formatter().parse(text) if name is not None]
    except ValueError as exc:
        raise UsageError(f"{option} {pattern!r}: {exc}") from None
    unknown = [f for f in fields if f not in PLACEHOLDERS]
    if unknown:
        raise UsageError(f"{option} {pattern!r}: unknown placeholder {{{unknown[0]}}} "
                         f"(use {', '.join('{' + p + '}' for p in PLACEHOLDERS)} or 'bids')")
    return text


def is_pattern(pattern: str) -> bool:
    """Whether `pattern` names a file per subject (placeholders in braces, or 'bids') rather than one
    file (a literal brace in a file name is written doubled, as in `str.format`)."""
    return pattern == "bids" or "{" in pattern


def dataset_root(image: InputImage) -> Path | None:
    """The dataset an image belongs to: the folder it was found in, else the nearest folder above
    it holding dataset_description.json (BIDS), else None."""
    if image.root is not None:
        return image.root
    for folder in image.path.resolve().parents:
        if is_bids(folder):
            return folder
    return None


def subject_file(pattern: str, image: InputImage, *, what: str) -> Path:
    """The file of `image` that `pattern` names, checked to exist.

    Placeholders: {folder} (the image's folder), {stem} (its name without .nii/.nii.gz),
    {dataset} (its dataset, see `dataset_root`) and {relative} (its folder within the dataset,
    e.g. sub-01/ses-M0/anat); the pattern `bids` means `BIDS_LABELS`, the derivatives layout
    `<dataset>/derivatives/labels/sub-X/[ses-Y/]anat/<stem>_seg.nii.gz`. A pattern without
    placeholders names the same file for every image.

    Raises:
        InputError: naming the image, when its file does not exist or its dataset is unknown.
    """
    text = check_pattern(pattern, option=f"-file_{what}")
    values = {"folder": str(image.path.parent), "stem": stem(image.path), "dataset": "", "relative": str(image.relative)}
    if "{dataset}" in text or "{relative}" in text:
        root = dataset_root(image)
        if root is None:
            raise InputError(f"{image.label}: its {what} pattern {pattern!r} needs the image's dataset, but it is in "
                             "no BIDS dataset or scanned folder")
        values["dataset"] = str(root)
        values["relative"] = str(image.path.resolve().parent.relative_to(root.resolve())) if image.root is None \
            else str(image.relative)
    path = Path(text.format(**values))
    if not path.is_file():
        raise InputError(f"{image.label}: {what} file {path} does not exist (from {pattern!r})")
    return path
