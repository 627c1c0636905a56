"""Files that belong to each image of a batch (a cord segmentation used as centerline, say), named
by a pattern with placeholders, and the dataset an image belongs to."""

from __future__ import annotations

import string
from pathlib import Path

from lesionseg.core.errors import InputError, UsageError
from lesionseg.core.nifti import stem


def is_bids(folder: Path) -> bool:
    return (folder / "dataset_description.json").is_file()


def label(path: Path, dataset: Path | None) -> str:
    """How messages and the summary name an image: its path in its dataset (below the top
    folder), else its path."""
    relative = Path(path).parent.relative_to(dataset) if dataset is not None else Path(".")
    return str(relative / Path(path).name) if relative != Path(".") else str(path)


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


def dataset_root(path: Path, dataset: Path | None) -> Path | None:
    """The dataset an image belongs to: the one it was found in, else the nearest folder above it
    holding dataset_description.json (BIDS), else None."""
    if dataset is not None:
        return dataset
    for folder in Path(path).resolve().parents:
        if is_bids(folder):
            return folder
    return None


def subject_file(pattern: str, path: Path, dataset: Path | None, *, what: str) -> Path:
    """The file that `pattern` names for the image at `path` (found in `dataset`, or None),
    checked to exist.

    Placeholders: {folder} (the image's folder), {stem} (its name without .nii/.nii.gz),
    {dataset} (its dataset, see `dataset_root`) and {relative} (its folder within the dataset,
    e.g. sub-01/ses-M0/anat); the pattern `bids` means `BIDS_LABELS`, the derivatives layout
    `<dataset>/derivatives/labels/sub-X/[ses-Y/]anat/<stem>_seg.nii.gz`. A pattern without
    placeholders names the same file for every image.

    Raises:
        InputError: naming the image, when its file does not exist or its dataset is unknown.
    """
    path = Path(path)
    text = check_pattern(pattern, option=f"-file_{what}")
    name = label(path, dataset)
    values = {"folder": str(path.parent), "stem": stem(path), "dataset": "",
              "relative": str(path.parent.relative_to(dataset)) if dataset is not None else "."}
    if "{dataset}" in text or "{relative}" in text:
        root = dataset_root(path, dataset)
        if root is None:
            raise InputError(f"{name}: its {what} pattern {pattern!r} needs the image's dataset, but it is in "
                             "no BIDS dataset or scanned folder")
        values["dataset"] = str(root)
        if dataset is None:
            values["relative"] = str(path.resolve().parent.relative_to(root.resolve()))
    found = Path(text.format(**values))
    if not found.is_file():
        raise InputError(f"{name}: {what} file {found} does not exist (from {pattern!r})")
    return found
