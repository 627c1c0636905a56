"""Snapshots of what a command wrote, for the golden-output test (`test_golden_outputs.py`).

A snapshot of an output folder is one record per file, made comparable between runs:
- NIfTI files: dtype, shape, affine, header codes and a SHA-256 of the voxel bytes; the voxels
  themselves go into an array store (`arrays`), so a difference can be measured, not only seen;
- TSV files: their text;
- JSON files (sidecars, QC entries): their content with the run's folders replaced by `<OUT>` and
  `<DATA>`, and the keys that hold the time or the command line of the run dropped;
- DICOM files: what the pixels and measurements say (SEG frames, segment labels, SR content items
  with values and units, the QC capture's pixels) and the derived UIDs, not dates or times;
- PNG files (QC images): a SHA-256 of the bytes (our own encoder: deterministic).
QC entry folders are named by a time stamp: in a snapshot that part of the path is `<STAMP>`.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

#: keys of a JSON file that hold the run's time, working folder or command line
VOLATILE_KEYS = {"cwd", "cmdline", "moddate", "Command"}
_STAMP = re.compile(r"\d{4}_\d{2}_\d{2}_\d{6}\.\d{6}_\d+_\d+")
#: UIDs lesionseg derives (2.25.<integer>) and its algorithm versions (<version>+<fingerprint of the
#: served model's parameters>): both depend on where the test session exported its models
_DERIVED_UID = re.compile(r"2\.25\.\d+")
_ALGORITHM_VERSION = re.compile(r"(\d+\.\d+\.\d+)\+[0-9a-f]{12}")


def without_derived_ids(text: str) -> str:
    """`text` with derived UIDs as `<UID>` and algorithm versions as `<version>+<MODEL>`."""
    return _ALGORITHM_VERSION.sub(r"\1+<MODEL>", _DERIVED_UID.sub("<UID>", text))


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Normaliser:
    """Replaces the run's own folders (and QC time stamps) in paths and strings."""

    def __init__(self, replacements: dict[str, str]) -> None:
        pairs: list[tuple[str, str]] = []
        for folder, token in replacements.items():
            for form in {str(folder), str(Path(folder).resolve())}:
                pairs.append((form, token))
        self.pairs = sorted(pairs, key=lambda p: -len(p[0]))  # longest first: nested folders

    def text(self, value: str) -> str:
        for folder, token in self.pairs:
            value = value.replace(folder, token)
        return _STAMP.sub("<STAMP>", value)

    def json(self, value):
        if isinstance(value, dict):
            return {k: self.json(v) for k, v in value.items() if k not in VOLATILE_KEYS}
        if isinstance(value, list):
            return [self.json(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value


def nifti_record(path: Path, key: str, arrays: dict[str, np.ndarray]) -> dict:
    import nibabel as nib

    image = nib.load(str(path))
    data = np.asanyarray(image.dataobj)
    arrays[key] = data
    header = image.header
    return {
        "kind": "nifti",
        "dtype": str(data.dtype),
        "shape": list(data.shape),
        "affine": np.asarray(image.affine, float).tolist(),
        "qform_code": int(header["qform_code"]),
        "sform_code": int(header["sform_code"]),
        "pixdim": [float(v) for v in header["pixdim"][:4]],
        "xyzt_units": int(header["xyzt_units"]),
        "sha256": digest(np.ascontiguousarray(data).tobytes()),
        "nonzero": int(np.count_nonzero(data)),
    }


def _sr_items(item, depth: int = 0) -> list[str]:
    """The content tree of an SR as lines: concept name, value type, value (and unit), nested."""
    lines = []
    for child in item.get("ContentSequence", []):
        name = child.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in child else ""
        kind = str(child.get("ValueType", ""))
        value = ""
        if kind == "NUM":
            measured = child.MeasuredValueSequence[0]
            value = f"{measured.NumericValue} {measured.MeasurementUnitsCodeSequence[0].CodeValue}"
        elif kind == "CODE":
            value = child.ConceptCodeSequence[0].CodeMeaning
        elif kind in ("TEXT", "UIDREF"):
            value = str(child.get("TextValue", child.get("UID", "")))
        elif kind == "IMAGE":
            value = child.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        lines.append(f"{'  ' * depth}{name} [{kind}] {value}".rstrip())
        lines.extend(_sr_items(child, depth + 1))
    return lines


def dicom_record(path: Path) -> dict:
    """What a DICOM output says (derived UIDs and model fingerprints as placeholders, see
    `without_derived_ids`; the test series' own UIDs are stable)."""
    import pydicom

    ds = pydicom.dcmread(str(path))
    return json.loads(without_derived_ids(json.dumps(_dicom_record(ds))))


def _dicom_record(ds) -> dict:
    record = {"kind": "dicom", "modality": str(ds.Modality), "sop_class": str(ds.SOPClassUID),
              "sop_instance": str(ds.SOPInstanceUID), "series_instance": str(ds.SeriesInstanceUID),
              "series_number": int(ds.get("SeriesNumber", 0) or 0),
              "series_description": str(ds.get("SeriesDescription", ""))}
    if "PixelData" in ds:
        record.update(rows=int(ds.Rows), columns=int(ds.Columns), frames=int(ds.get("NumberOfFrames", 1) or 1),
                      pixels_sha256=digest(bytes(ds.PixelData)))
    if ds.Modality == "SEG":
        record["segments"] = [f"{s.SegmentNumber} {s.SegmentLabel} {s.SegmentAlgorithmName} {s.TrackingUID}"
                              for s in ds.SegmentSequence]
        # how many: the compressed test series get new random instance UIDs (pydicom's compress)
        record["referenced_instances"] = len(ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence)
        record["software_versions"] = str(ds.get("SoftwareVersions", ""))
    if ds.Modality == "SR":
        record["content"] = _sr_items(ds)
    return record


def snapshot(folder: Path, normaliser: Normaliser, *, prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, dict]:
    """Every file under `folder` (hidden files and QC's index.html excepted): relative path ->
    record. Arrays are stored in `arrays` under `<prefix>/<relative path>`."""
    records: dict[str, dict] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = normaliser.text(str(path.relative_to(folder)))
        if path.name.startswith(".") or path.name == "index.html":
            continue
        name = path.name
        if name.endswith((".nii", ".nii.gz")):
            record = nifti_record(path, f"{prefix}/{relative}", arrays)
        elif name.endswith(".json"):
            record = {"kind": "json", "content": normaliser.json(json.loads(path.read_text()))}
        elif name.endswith(".tsv"):
            record = {"kind": "text", "content": normaliser.text(_without_seconds(path.read_text()))}
        elif name.endswith(".dcm"):
            record = dicom_record(path)
        else:
            record = {"kind": "bytes", "sha256": digest(path.read_bytes())}
        if relative in records:  # QC entries of a batch: one JSON per entry, their names differ only by time stamp
            previous = records[relative]
            group = previous["records"] if previous.get("kind") == "several" else [previous]
            records[relative] = {"kind": "several", "records": sorted([*group, record], key=lambda r: json.dumps(r, sort_keys=True))}
        else:
            records[relative] = record
    return records


def _without_seconds(text: str) -> str:
    """A TSV without its "seconds" column (a batch summary's timing)."""
    rows = [line.split("\t") for line in text.splitlines()]
    if not rows or "seconds" not in rows[0]:
        return text
    column = rows[0].index("seconds")
    return "\n".join("\t".join(r[:column] + r[column + 1:]) for r in rows) + "\n"


def differences(expected: dict, actual: dict, where: str = "") -> list[str]:
    """Human-readable differences between two snapshots (or parts of them)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        found = []
        for key in sorted(set(expected) | set(actual)):
            if key not in actual:
                found.append(f"{where}/{key}: missing")
            elif key not in expected:
                found.append(f"{where}/{key}: not in the golden outputs")
            else:
                found.extend(differences(expected[key], actual[key], f"{where}/{key}"))
        return found
    if expected != actual:
        return [f"{where}: {str(expected)[:300]} != {str(actual)[:300]}"]
    return []
