"""DICOM test series made from the real MR volumes in ../shared/sct_testing_data, written with
`dicom_writer` (tests/): axial (T2*w), sagittal (T2w), oblique (T1w rotated
20/-12/7 degrees), multi-frame (Legacy Converted Enhanced MR of the T2w fake-lesion volume) and
JPEG 2000 compressed (T2w)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: name -> (volume under sct_testing_data, SeriesSpec options, rotation in degrees or None)
SERIES = {
    "axial": ("t2s/t2s.nii.gz", {"description": "T2star axial"}, None),
    "sagittal": ("t2/t2.nii.gz", {"description": "T2w sagittal"}, None),
    "oblique": ("t1/t1w.nii.gz", {"description": "T1w oblique"}, (20.0, -12.0, 7.0)),
    "multiframe": ("t2/t2_fake_lesion.nii.gz", {"description": "T2w multiframe", "multiframe": True}, None),
    "jpeg2000": ("t2/t2.nii.gz", {"description": "T2w sagittal J2K", "compression": "jpeg2000"}, None),
}


def source_volume(shared: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(data (x, y, z) as stored, affine voxel -> RAS+ mm) that series `name` is written from."""
    import nibabel as nib
    from scipy.spatial.transform import Rotation

    file, _, rotation = SERIES[name]
    image = nib.load(str(shared / "sct_testing_data" / file))
    affine = image.affine
    if rotation is not None:
        turn = np.eye(4)
        turn[:3, :3] = Rotation.from_euler("xyz", rotation, degrees=True).as_matrix()
        affine = turn @ affine
    return np.asanyarray(image.dataobj), affine


def write(shared: Path, name: str, folder: Path, **changes) -> Path:
    """Write series `name` into `folder` (made); `changes` override its SeriesSpec fields."""
    from dicom_writer import SeriesSpec, write_series

    data, affine = source_volume(shared, name)
    options = {**SERIES[name][1], **changes}
    write_series(data, affine, folder, SeriesSpec(seed=options.pop("seed", name), **options))
    return folder


def canonical(data: np.ndarray, affine: np.ndarray):
    """The volume in nibabel's closest canonical (RAS) axis order: (data, affine)."""
    import nibabel as nib

    image = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data), affine))
    return np.asanyarray(image.dataobj), image.affine


def dcm2niix(folder: Path, out: Path):
    """Convert `folder` with dcm2niix (the oracle); returns the one NIfTI image it wrote."""
    import subprocess

    import nibabel as nib

    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["dcm2niix", "-z", "n", "-f", "%s_%d", "-o", str(out), str(folder)],
                          capture_output=True, text=True, timeout=120)
    images = sorted(out.glob("*.nii"))
    if done.returncode != 0 or len(images) != 1:
        raise RuntimeError(f"dcm2niix on {folder}: rc {done.returncode}, {len(images)} images\n{done.stdout}\n{done.stderr}")
    return nib.load(str(images[0]))


def decode_segment(path: Path, series, label: str) -> np.ndarray:
    """The (x, y, z) mask of the segment labelled `label` in the DICOM SEG file at `path`, decoded
    by highdicom and put on `series`' grid through the SEG's own references to source frames."""
    import highdicom as hd

    seg = hd.seg.segread(str(path))
    (number,) = [int(d.SegmentNumber) for d in seg.SegmentSequence if d.SegmentLabel == label]
    if series.multiframe:
        source = series.datasets[0].SOPInstanceUID
        pixels = seg.get_pixels_by_source_frame(source_sop_instance_uid=source,
                                                source_frame_numbers=[f.frame + 1 for f in series.frames],
                                                segment_numbers=[number])
    else:
        uids = [series.datasets[f.index].SOPInstanceUID for f in series.frames]
        pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[number])
    return np.transpose(pixels[..., 0], (2, 1, 0)).astype(np.uint8)


def dciodvfy_errors(path: Path) -> list[str]:
    """The "Error" lines dicom3tools' dciodvfy prints for the file at `path`."""
    import subprocess

    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


def sr_numbers(path: Path) -> dict:
    """{"count", "total_mm3", "lesions" (per-lesion mm3 by tracking id), "cord_mm3"} read back from
    a TID 1500 SR file by walking its content tree (pydicom only)."""
    import pydicom

    ds = pydicom.dcmread(str(path))
    found: dict = {"lesions": {}}

    def walk(items, group_id=None):
        for item in items:
            name = item.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in item else ""
            if item.ValueType == "CONTAINER" and name == "Measurement Group":
                ids = [c.TextValue for c in item.ContentSequence if c.ValueType == "TEXT"
                       and c.ConceptNameCodeSequence[0].CodeMeaning == "Tracking Identifier"]
                walk(item.ContentSequence, ids[0] if ids else None)
                continue
            if item.ValueType == "NUM":
                value = float(item.MeasuredValueSequence[0].NumericValue)
                if name.startswith("Number of lesions"):
                    found["count"] = int(value)
                elif name == "Volume" and group_id == "multiple sclerosis lesions":
                    found["total_mm3"] = value
                elif name == "Volume" and group_id == "spinal cord":
                    found["cord_mm3"] = value
                elif name == "Volume":
                    found["lesions"][group_id] = value
            if "ContentSequence" in item:
                walk(item.ContentSequence, group_id)

    walk(ds.ContentSequence)
    return found
