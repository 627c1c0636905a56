"""ivadomed 3D inference (`ivadomed.inference.segment_volume`) and SCT's ensemble mean, in numpy.

SCT 6.0-6.3 shipped `seg_ms_lesion_mp2rage` as an ivadomed ensemble: several members (seeds), each
a folder `<name>/<name>.onnx` + `<name>/<name>.json` (the training config). SCT runs ivadomed's
`segment_volume` on every member and averages the members' outputs (`np.mean`), so its default
result is a vote fraction in [0, 1].

Orientation contract: the client sends the volume reoriented to nibabel's RAS (what ivadomed's
`nib.as_closest_canonical` gives; SCT's code "LPI") as an (x, y, z) float32 array with its voxel
size in mm (the header's zooms, reordered with the axes). Per member, as ivadomed does:
1. reorder RAS to (height, width, depth) for `loader_parameters.slice_axis` (axial: unchanged,
   sagittal: transpose (2, 1, 0), coronal: (2, 0, 1)), zooms likewise;
2. `Resample`: `scipy.ndimage.zoom` by zoom/target spacing, order 2, float32 result;
3. `CenterCrop`: window start `int(round((n - t) / 2))` per axis (Python rounding), zero outside
   the volume;
4. patches of `length_3D` at starts `range(0, n - length + 1, stride)` per axis (the shape must
   fit exactly, as ivadomed requires); each patch z-scored on its own (`NormalizeInstance`:
   (x - mean) / std, or x - mean when std < 1e-5);
5. the network's sigmoid outputs summed over patches and divided by the per-voxel count;
6. undo: crop undone by zero padding, resampling undone by `zoom` back to the exact shape with
   order 1, axes back to RAS;
7. values <= 0.01 set to 0, then the config's `postprocessing` steps in their order
   (`remove_noise`, `binarize_prediction` (>= thr), `remove_small` (18-connectivity),
   `fill_holes`, `keep_largest`).
Then the mean over members (SCT's `segment_and_average_volumes`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
from scipy import ndimage

from lesionseg.core.limits import check_resampled
from lesionseg.server.pipelines import JsonPlan, Predict

SLICE_AXES = {"sagittal": 0, "coronal": 1, "axial": 2}
_TO_HWD = {0: (2, 1, 0), 1: (2, 0, 1), 2: (0, 1, 2)}
POSTPROCESSING_STEPS = ("remove_noise", "binarize_prediction", "remove_small", "fill_holes", "keep_largest")
NOISE_FLOOR = 0.01  # ivadomed pred_to_nib's discard_noise


class UnsupportedConfig(ValueError):
    """The member's ivadomed config uses something this implementation does not reproduce."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class MemberPlan(JsonPlan):
    """What inference needs from one member's ivadomed JSON config (axes in (h, w, d) order)."""

    network: str
    slice_axis: int
    spacing: tuple[float, float, float] | None  # Resample target (mm), None: no resampling
    crop: tuple[int, int, int] | None  # CenterCrop size, None: no crop
    normalize: bool
    length: tuple[int, int, int]
    stride: tuple[int, int, int]
    postprocessing: tuple[tuple[str, dict[str, Any]], ...]

    TUPLES: ClassVar[tuple[str, ...]] = ("spacing", "crop", "length", "stride")

    @classmethod
    def from_config(cls, config: Mapping[str, Any], network: str) -> "MemberPlan":
        """Read an ivadomed training config; raises UnsupportedConfig for what is not reproduced."""
        loader = config.get("loader_parameters", {})
        axis = loader.get("slice_axis", "axial")
        if axis not in SLICE_AXES:
            raise UnsupportedConfig(f"slice_axis {axis!r}")
        unet3d = config.get("Modified3DUNet", {})
        if not unet3d.get("applied"):
            raise UnsupportedConfig("only 3D models (Modified3DUNet applied) are supported")
        for key in ("FiLMedUnet", "HeMISUnet"):
            if config.get(key, {}).get("applied"):
                raise UnsupportedConfig(f"{key} models need metadata inputs")
        if loader.get("roi_params", {}).get("suffix"):
            raise UnsupportedConfig("models cropped to an ROI (roi_params.suffix) need a prior image")
        # ivadomed's get_subdatasets_transforms: a transform applies at test time unless its
        # dataset_type leaves "testing" out
        transforms = {name: params for name, params in config.get("transformation", {}).items()
                      if "testing" in params.get("dataset_type", ["testing"])}
        known = {"Resample", "CenterCrop", "NormalizeInstance", "NumpyToTensor"}
        for name in transforms:
            if name not in known:
                raise UnsupportedConfig(f"transformation {name!r} at test time")
        resample = transforms.get("Resample")
        crop = transforms.get("CenterCrop")
        steps = []
        for name, params in config.get("postprocessing", {}).items():
            if name not in POSTPROCESSING_STEPS:
                raise UnsupportedConfig(f"postprocessing step {name!r}")
            steps.append((name, dict(params)))
        length = tuple(int(v) for v in unet3d["length_3D"])
        stride = tuple(int(v) for v in unet3d["stride_3D"])
        return cls(
            network=network, slice_axis=SLICE_AXES[axis],
            spacing=(float(resample["hspace"]), float(resample["wspace"]), float(resample.get("dspace", 1.0))) if resample else None,
            crop=tuple(int(v) for v in crop["size"]) if crop else None,  # type: ignore[arg-type]
            normalize="NormalizeInstance" in transforms, length=length, stride=stride,  # type: ignore[arg-type]
            postprocessing=tuple(steps),
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class IvadomedPlan(JsonPlan):
    members: tuple[MemberPlan, ...]
    orientation: str = "LPI"  # SCT code of nibabel's RAS (ivadomed's canonical orientation)
    labels: dict[str, int] = dataclasses.field(default_factory=lambda: {"background": 0, "lesion": 1})

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "IvadomedPlan":
        members = []
        for m in raw["members"]:
            steps = tuple((name, dict(params)) for name, params in m["postprocessing"])
            members.append(MemberPlan.from_dict({**m, "postprocessing": steps}))
        return cls(**{**raw, "members": tuple(members)})


def centre_crop(volume: np.ndarray, size: Sequence[int]) -> tuple[np.ndarray, tuple[int, ...]]:
    """ivadomed's CenterCrop (zero outside the volume); returns the crop and its start per axis."""
    starts = tuple(int(round((n - t) / 2.0)) for n, t in zip(volume.shape, size))
    out = np.zeros(tuple(size), volume.dtype)
    src, dst = [], []
    for start, n, t in zip(starts, volume.shape, size):
        a, b = max(start, 0), min(start + t, n)
        src.append(slice(a, max(a, b)))
        dst.append(slice(a - start, a - start + max(0, b - a)))
    out[tuple(dst)] = volume[tuple(src)]
    return out, starts


def uncrop(volume: np.ndarray, starts: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Undo `centre_crop`: the crop pasted at `starts` into zeros of `shape` (parts outside dropped)."""
    out = np.zeros(tuple(shape), volume.dtype)
    src, dst = [], []
    for start, n, t in zip(starts, shape, volume.shape):
        a, b = max(start, 0), min(start + t, n)
        dst.append(slice(a, max(a, b)))
        src.append(slice(a - start, a - start + max(0, b - a)))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def patch_starts(shape: Sequence[int], length: Sequence[int], stride: Sequence[int]) -> list[tuple[int, int, int]]:
    """ivadomed's subvolume starts; the shape must fit the patching exactly (ivadomed's rule)."""
    for n, l, s in zip(shape, length, stride):
        if n < l or (n - l) % s != 0 or l % 16 != 0:
            raise ValueError(f"volume of shape {tuple(shape)} cannot be cut into {tuple(length)} patches with stride {tuple(stride)}")
    ranges = [range(0, n - l + 1, s) for n, l, s in zip(shape, length, stride)]
    return [(x, y, z) for x in ranges[0] for y in ranges[1] for z in ranges[2]]


def normalize_instance(patch: np.ndarray) -> np.ndarray:
    """ivadomed's NormalizeInstance on one float32 patch."""
    std = patch.std()
    return patch - patch.mean() if std < 1e-5 else (patch - patch.mean()) / std


def segment_member(image_ras: np.ndarray, zooms_ras: Sequence[float], member: MemberPlan, predict: Predict) -> np.ndarray:
    """One member on a RAS (x, y, z) float32 volume -> its post-processed output on the same grid
    (float32; binary when the config binarises). `predict` maps (N, 1, *length) float32 patches to
    (N, 1, *length) probabilities."""
    order = _TO_HWD[member.slice_axis]
    data = np.ascontiguousarray(image_ras.astype(np.float32, copy=False).transpose(order))
    zooms = [float(zooms_ras[i]) for i in order]
    native_shape = data.shape
    if member.spacing is not None:
        factors = [z / s for z, s in zip(zooms, member.spacing)]
        check_resampled([round(n * f) for n, f in zip(data.shape, factors)], what="IMAGE")  # scipy's zoom: round(n * factor)
        data = ndimage.zoom(data, factors, order=2).astype(np.float32)
    resampled_shape = data.shape
    starts = None
    if member.crop is not None:
        data, starts = centre_crop(data, member.crop)
    corners = patch_starts(data.shape, member.length, member.stride)
    windows = [tuple(slice(c, c + l) for c, l in zip(corner, member.length)) for corner in corners]
    patches = np.stack([normalize_instance(data[w]) if member.normalize else data[w] for w in windows])[:, None]
    outputs = predict(np.ascontiguousarray(patches, np.float32))[:, 0]
    total = np.zeros(data.shape, np.float32)
    count = np.zeros(data.shape, np.float32)
    for window, out in zip(windows, outputs):
        total[window] += out
        count[window] += 1
    pred = total / count
    if starts is not None:
        pred = uncrop(pred, starts, resampled_shape)
    if member.spacing is not None:
        pred = ndimage.zoom(pred, [n / c for n, c in zip(native_shape, pred.shape)], order=1).astype(np.float32)
    pred = np.ascontiguousarray(pred.transpose(np.argsort(order)))
    pred[pred <= NOISE_FLOOR] = 0
    return postprocess(pred, member.postprocessing, zooms_ras)


def postprocess(pred: np.ndarray, steps: Sequence[tuple[str, Mapping[str, Any]]], zooms: Sequence[float]) -> np.ndarray:
    """ivadomed's `Postprocessing.apply` for one class, steps in the config's order."""
    data = pred.astype(np.float64)
    for name, params in steps:
        if name == "remove_noise":
            if params["thr"] >= 0:
                data = data * (data > params["thr"])
        elif name == "binarize_prediction":
            if params["thr"] >= 0:
                data = (data >= params["thr"]).astype(np.float64)
        elif name == "remove_small":
            thr = params["thr"][0] if isinstance(params["thr"], list) else params["thr"]
            size_min = thr if params["unit"] == "vox" else np.round(thr / float(np.prod(zooms)))
            labels, n = ndimage.label(data, structure=ndimage.generate_binary_structure(3, 2))
            if n:
                sizes = np.bincount(labels.ravel())
                small = np.flatnonzero(sizes < size_min)
                data[np.isin(labels, small[small > 0])] = 0
        elif name == "fill_holes":
            data = ndimage.binary_fill_holes(data >= 0.5, structure=np.ones((3, 3, 3))).astype(np.float64)
        elif name == "keep_largest":
            data = _keep_largest(data)
    return data.astype(np.float32)


def _keep_largest(data: np.ndarray) -> np.ndarray:
    """ivadomed's keep_largest_object (soft input: decided on > 0.001, values kept)."""
    binary = data >= 0.001
    labels, n = ndimage.label(binary)
    if n == 0:
        return data
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return data * (labels == int(np.argmax(sizes)))


def ensemble(image_ras: np.ndarray, zooms_ras: Sequence[float], plan: IvadomedPlan,
             predict_with: Callable[[str], Predict]) -> np.ndarray:
    """SCT's ensemble: the mean of every member's output (float32, (x, y, z) RAS)."""
    outputs = [segment_member(image_ras, zooms_ras, m, predict_with(m.network)) for m in plan.members]
    return np.mean(outputs, axis=0).astype(np.float32)
