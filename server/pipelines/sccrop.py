"""sc-crop's spinal-cord detection box (PyPI `sc-crop` 0.12.1 by the ivadomed team, what SCT 7 runs
before `lesion_ms` and `spinalcord`) as numpy steps around its two networks, the YOLO detector and
the slice classifier. Every step reproduces the package's own, voxel for voxel
(tests/test_sccrop_steps.py runs the package beside them); sc-crop's names in brackets.

1. `detection_volume`: the image reoriented to LAS [reorient_to_las] and resampled to 1 x 1 x 10 mm
   with trilinear interpolation unless already there [resample_for_inference]. The resampled
   volume is nibabel's `resample_to_output`, world-aligned (RAS), as the package has it.
2. `slab_slices`: one uint8 image per axial slice, superior to inferior, three channels (the slice
   above, the slice, the slice below; zeros beyond the volume), each slice scaled from its own
   0.5th-99.5th percentiles to 0-255 [build_slices, norm_scope "slice_all"].
3. The detector, per slice: `detector_input` (the YOLO predictor's letterbox), the network (not
   here), `best_detection` (the most confident box above 0.1, back on the slice, normalised
   (cx, cy, w, h)) [infer_slices]; the classifier's input is `classifier_input`.
4. `first_cord_run`: consecutive detected slices grouped, from the lowest index up; the first group
   in which the classifier calls a slice cord (p >= 0.5) and every detection above it are kept
   [cls_comp_filter]; none called cord: all kept.
5. `las_box`: the detections in the LAS voxels of the original image [aggregate_bbox_3d].
6. `padded`: widened by the model's margins in mm, rounded up to voxels, clipped [BBox3D.pad].
7. `original_faces`: back to the image's own array axes, as inclusive faces [BBox3D.reorient].

Boxes here are `LasBox`: (rl1, rl2, ap1, ap2, z1, z2) in LAS voxel indices, the upper ends
exclusive, as the package keeps them (which makes its superior face, the largest detected z,
exclusive too: reproduced, not corrected).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping, Sequence

import numpy as np

from lesionseg.core.interface import CROP_PAD_KEYS

#: sc-crop's inference settings (its config.yaml): slice thickness and in-plane size in mm.
SI_MM, INPLANE_MM = 10.0, 1.0
#: the classifier's threshold for "cord" (cls_conf), and the cord's index in its output (no cord, cord)
CORD_PROBABILITY = 0.5
CORD_CLASS = 1
#: crop_metadata.json's keys, in mm (SCT 7 refuses a cropped model whose file lacks one)
PAD_KEYS = CROP_PAD_KEYS


@dataclasses.dataclass(frozen=True, kw_only=True)
class Padding:
    """Margins around the detected cord, mm per anatomical face."""

    superior: float
    inferior: float
    left: float
    right: float
    anterior: float
    posterior: float

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, object], *, source: str = "crop_metadata.json") -> Padding:
        """The six `pad_*` values of a model's crop_metadata.json.

        Raises:
            ValueError: a key missing or not a non-negative number (the message names it and `source`).
        """
        values = {}
        for key in PAD_KEYS:
            value = metadata.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{source}: {key} must be a non-negative number of mm, got {value!r}")
            values[key.removeprefix("pad_")] = float(value)
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class LasBox:
    """(rl1, rl2, ap1, ap2, z1, z2): LAS voxel indices, upper ends exclusive."""

    rl1: int
    rl2: int
    ap1: int
    ap2: int
    z1: int
    z2: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class DetectionVolume:
    """`volume`: (x, y, z) float32 at 1 x 1 x 10 mm (world-aligned when resampled); `las_shape`,
    `las_zooms`: the original image reoriented to LAS, voxels and mm; `ornt`: the original image's
    orientation (nibabel `io_orientation`)."""

    volume: np.ndarray
    las_shape: tuple[int, int, int]
    las_zooms: tuple[float, float, float]
    ornt: np.ndarray


def detection_volume(data: np.ndarray, affine: np.ndarray, zooms: Sequence[float]) -> DetectionVolume:
    """Step 1: `data` (x, y, z) as nibabel's `dataobj` gives it (scaled, its dtype kept: the
    package resamples in that dtype), with the image's `affine` and header `zooms` (mm)."""
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform
    from nibabel.processing import resample_to_output, vox2out_vox

    from lesionseg.core.limits import check_resampled

    from lesionseg.core.nibabel_import import nibabel as nib

    image = nib.Nifti1Image(np.asarray(data), affine)
    image.header.set_zooms(tuple(float(z) for z in zooms[:3]))
    ornt = io_orientation(image.affine)
    las = image.as_reoriented(ornt_transform(ornt, axcodes2ornt(("L", "A", "S"))))
    las_zooms = tuple(float(z) for z in las.header.get_zooms()[:3])
    target = (INPLANE_MM, INPLANE_MM, SI_MM)
    if all(abs(t - z) < 0.01 for t, z in zip(target, las_zooms)):
        resampled = las
    else:
        check_resampled(vox2out_vox((las.shape[:3], las.affine), target)[0], what="IMAGE (sc-crop's 1 x 1 x 10 mm volume)")
        resampled = resample_to_output(las, voxel_sizes=target, order=1)
    return DetectionVolume(volume=resampled.get_fdata(dtype=np.float32), las_shape=tuple(las.shape[:3]),
                           las_zooms=las_zooms, ornt=ornt)  # type: ignore[arg-type]


def _scaled(slice_: np.ndarray) -> np.ndarray:
    """One (AP, RL) slice to uint8 from its own 0.5th-99.5th percentiles (all voxels)."""
    lo, hi = np.percentile(slice_, [0.5, 99.5])
    if hi <= lo:
        return np.zeros(slice_.shape, np.uint8)
    return ((np.clip(slice_, lo, hi) - lo) / (hi - lo) * 255).astype(np.uint8)


def slab_slices(volume: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Step 2: (n, AP, RL, 3) uint8 slices, superior (z = n - 1) to inferior, and their z indices.
    A slice is the volume's z plane transposed and flipped on both axes."""
    n = volume.shape[2]
    planes = [_scaled(volume[:, :, z].T[::-1, ::-1]) for z in range(n)]
    black = np.zeros((volume.shape[1], volume.shape[0]), np.uint8)
    padded_planes = [black, *planes, black]  # index z + 1: a neighbour beyond the volume is black
    order = list(range(n - 1, -1, -1))
    slices = [np.stack([padded_planes[z + 2], padded_planes[z + 1], padded_planes[z]], axis=2) for z in order]
    return np.stack(slices), order


Detection = tuple[float, float, float, float]  # (cx, cy, w, h), normalised to the slice

#: the networks' input size (imgsz), pixels
IMAGE_SIZE = 320
#: the grey of a letterbox's bars
PAD_GREY = 114


#: the detector's padding is rounded to this many pixels (its stride): the detector is exported
#: with dynamic height and width, so the package's predictor letterboxes to the smallest frame
STRIDE = 32


def detector_input(slice_: np.ndarray) -> np.ndarray:
    """The detector's input for one (H, W, 3) uint8 slice, as the package's YOLO predictor makes it:
    scaled (OpenCV bilinear) to fit 320 x 320, each side at least 1 px, padded with grey (114) to
    the next multiple of 32 on each axis, centred; channels reversed (the predictor takes the
    slice for BGR and feeds RGB, so the network sees inferior, current, superior), (1, 3, H', W')
    float32 in [0, 1] [infer_slices -> ultralytics LetterBox(320, auto=True, stride=32)]."""
    import cv2

    h, w = slice_.shape[:2]
    scale = min(IMAGE_SIZE / h, IMAGE_SIZE / w)
    nw, nh = max(round(w * scale), 1), max(round(h * scale), 1)
    dw, dh = (IMAGE_SIZE - nw) % STRIDE / 2, (IMAGE_SIZE - nh) % STRIDE / 2
    image = slice_ if (w, h) == (nw, nh) else cv2.resize(slice_, (nw, nh), interpolation=cv2.INTER_LINEAR)
    framed = cv2.copyMakeBorder(image, round(dh - 0.1), round(dh + 0.1), round(dw - 0.1), round(dw + 0.1),
                                cv2.BORDER_CONSTANT, value=(PAD_GREY,) * 3)
    return framed[..., ::-1].transpose(2, 0, 1)[np.newaxis].astype(np.float32) / 255


#: the detector's confidence threshold (conf; a box must exceed it)
DETECTION_CONFIDENCE = 0.1


def best_detection(output: np.ndarray, input_shape: Sequence[int], slice_shape: Sequence[int]) -> Detection | None:
    """One slice's detection from the end-to-end detector's output, as the package reads it.

    Args:
        output: (300, 6) float32 rows (x1, y1, x2, y2, confidence, class) in the pixels of the
            detector's input.
        input_shape: (H', W') of `detector_input`; slice_shape: (h, w) of the slice.
    Returns:
        The most confident box above 0.1 (the first of equals), back on the slice and normalised,
        (cx, cy, w, h); None when no box passes [ultralytics' end-to-end filter, scale_boxes and
        Boxes.xywhn, then infer_slices' best box].
    """
    rows = np.asarray(output, np.float32)
    rows = rows[rows[:, 4] > DETECTION_CONFIDENCE][:300]
    if not len(rows):
        return None
    box = rows[int(np.argmax(rows[:, 4])), :4].copy()
    (in_h, in_w), (h, w) = input_shape[:2], slice_shape[:2]
    gain = min(in_h / h, in_w / w)
    new_h, new_w = max(round(h * gain), 1), max(round(w * gain), 1)
    pad_x, pad_y = round((in_w - new_w) / 2 - 0.1), round((in_h - new_h) / 2 - 0.1)
    box[[0, 2]] -= pad_x
    box[[1, 3]] -= pad_y
    box[[0, 2]] /= np.float32(new_w / w)
    box[[1, 3]] /= np.float32(new_h / h)
    box[[0, 2]] = box[[0, 2]].clip(0, w)
    box[[1, 3]] = box[[1, 3]].clip(0, h)
    xywh = np.empty(4, np.float32)  # float32 throughout, as the package's tensors
    xywh[:2] = (box[:2] + box[2:]) / np.float32(2)
    xywh[2:] = box[2:] - box[:2]
    xywh[[0, 2]] /= np.float32(w)
    xywh[[1, 3]] /= np.float32(h)
    return tuple(float(v) for v in xywh)  # type: ignore[return-value]


def classifier_input(slice_: np.ndarray) -> np.ndarray:
    """The classifier's input for one (H, W, 3) uint8 slice: scaled (OpenCV bilinear) so its longer
    side is 320 px, centred on 320 x 320 grey (114), channels as they are, (1, 3, 320, 320) float32
    in [0, 1] [_letterbox_cls]."""
    import cv2

    h, w = slice_.shape[:2]
    scale = IMAGE_SIZE / max(h, w)
    nh, nw = round(h * scale), round(w * scale)
    image = slice_ if (nh, nw) == (h, w) else cv2.resize(slice_, (nw, nh), interpolation=cv2.INTER_LINEAR)
    ph, pw = IMAGE_SIZE - nh, IMAGE_SIZE - nw
    framed = cv2.copyMakeBorder(image, ph // 2, ph - ph // 2, pw // 2, pw - pw // 2, cv2.BORDER_CONSTANT,
                                value=(PAD_GREY,) * 3)
    return framed.astype(np.float32).transpose(2, 0, 1)[np.newaxis] / 255.0


def first_cord_run(detections: Mapping[int, Detection], is_cord: Callable[[int], float]) -> dict[int, Detection]:
    """Step 4: `is_cord(z)` is the classifier's cord probability of slice z, asked lazily in the
    package's order (runs of consecutive z from the lowest, each from its lowest z)."""
    runs: list[list[int]] = []
    for z in sorted(detections):
        if runs and z == runs[-1][-1] + 1:
            runs[-1].append(z)
        else:
            runs.append([z])
    for run in runs:
        if any(is_cord(z) >= CORD_PROBABILITY for z in run):
            return {z: box for z, box in detections.items() if z >= run[0]}
    return dict(detections)


def las_box(detections: Mapping[int, Detection], las_shape: Sequence[int], si_zoom: float) -> LasBox:
    """Step 5: `si_zoom` = the LAS image's slice thickness / 10 mm.

    Raises:
        ValueError: no detection (sc-crop: "No spinal cord detected").
    """
    if not detections:
        raise ValueError("no spinal cord detected")
    rl_n, ap_n, z_n = (int(v) for v in las_shape[:3])
    rl1, rl2, ap1, ap2, zs = [], [], [], [], []
    for z, (cx, cy, w, h) in detections.items():
        rl_c, ap_c = cx * rl_n, (1.0 - cy) * ap_n
        rl_half, ap_half = w / 2 * rl_n, h / 2 * ap_n
        rl1.append(max(0, int(rl_c - rl_half)))
        rl2.append(min(rl_n, int(rl_c + rl_half)))
        ap1.append(max(0, int(ap_c - ap_half)))
        ap2.append(min(ap_n, int(ap_c + ap_half)))
        zs.append(min(z_n - 1, round(z / si_zoom)))
    return LasBox(min(rl1), max(rl2), min(ap1), max(ap2), min(zs), max(zs))


def padded(box: LasBox, padding: Padding, las_zooms: Sequence[float], las_shape: Sequence[int]) -> LasBox:
    """Step 6: each face widened by its margin (mm -> voxels, rounded up), clipped to the image.
    In LAS, index 0 is right, posterior, inferior."""
    rl_mm, ap_mm, si_mm = las_zooms[:3]
    rl_n, ap_n, z_n = las_shape[:3]

    def vox(mm: float, size: float) -> int:
        return int(np.ceil(mm / size))

    return LasBox(max(0, box.rl1 - vox(padding.right, rl_mm)), min(rl_n, box.rl2 + vox(padding.left, rl_mm)),
                  max(0, box.ap1 - vox(padding.posterior, ap_mm)), min(ap_n, box.ap2 + vox(padding.anterior, ap_mm)),
                  max(0, box.z1 - vox(padding.inferior, si_mm)), min(z_n, box.z2 + vox(padding.superior, si_mm)))


def original_faces(box: LasBox, las_shape: Sequence[int], ornt: np.ndarray) -> dict[str, int]:
    """Step 7: the box on the original image's array axes, as SCT 7's inclusive faces
    {"xmin": ..., "zmax": ...}."""
    from nibabel.orientations import axcodes2ornt, ornt_transform

    ranges = [(box.rl1, box.rl2), (box.ap1, box.ap2), (box.z1, box.z2)]
    out: list[tuple[int, int]] = [(0, 0)] * 3
    for axis, (target, flip) in enumerate(ornt_transform(axcodes2ornt(("L", "A", "S")), ornt)):
        lo, hi = ranges[axis]
        n = int(las_shape[axis])
        out[int(target)] = (lo, hi) if flip == 1 else (n - hi, n - lo)
    faces = {}
    for axis, name in enumerate("xyz"):
        faces[f"{name}min"], faces[f"{name}max"] = out[axis][0], out[axis][1] - 1
    return faces


def cord_box(data: np.ndarray, affine: np.ndarray, zooms: Sequence[float], *, padding: Padding,
             detect: Callable[[np.ndarray], Sequence[Detection | None]],
             cord_probability: Callable[[np.ndarray], float]) -> dict[str, int]:
    """Steps 1-7 [detect]: the cord's box on the image's own array axes, inclusive faces.

    Args:
        data, affine, zooms: as `detection_volume` takes them.
        detect: the detector on (n, AP, RL, 3) uint8 slices: each slice's most confident box or None.
        cord_probability: the classifier on one (AP, RL, 3) uint8 slice.
    Raises:
        ValueError: no spinal cord detected.
    """
    prepared = detection_volume(data, affine, zooms)
    slices, order = slab_slices(prepared.volume)
    found = {z: box for z, box in zip(order, detect(slices)) if box is not None}
    by_z = dict(zip(order, slices))
    kept = first_cord_run(found, lambda z: cord_probability(by_z[z]))
    box = las_box(kept, prepared.las_shape, prepared.las_zooms[2] / SI_MM)
    return original_faces(padded(box, padding, prepared.las_zooms, prepared.las_shape), prepared.las_shape, prepared.ornt)
