"""nnU-Net v2 inference (`nnUNetPredictor`) as pure numpy steps the Triton models delegate to.

Orientation contract: the client sends the volume reoriented to the plan's `orientation` (SCT's
code; `dataset.json["image_orientation"]` or LPI), as an (x, y, z) array with its spacing. Like
SCT, `preprocess` transposes it to (z, y, x) with reversed spacing before nnU-Net's own steps:
`transpose_forward`, crop to the nonzero region, normalisation, resampling to the plan spacing.
`sliding_window` runs the network over `patch_size` tiles (step 0.5, gaussian weighting, optional
mirroring); `postprocess` resamples the logits back, takes the argmax, pastes the crop box,
applies `transpose_backward` and returns to (x, y, z).

A 2D configuration (`patch_size` and `spacing` of two axes) runs slice by slice along the first
transposed axis, which keeps its spacing (nnU-Net's `DefaultPreprocessor` and sliding window). A
region-based model (dataset.json labels given as lists, `regions_class_order`; SCT 7's
lesion_ms_axial_t2) has one sigmoid head per region: a voxel takes the value of the last region
in `regions_class_order` whose probability is > 0.5 (nnU-Net's `LabelManager`), and each name's
mask is the label values dataset.json gives it (SCT's nested labels: `sc` = [1, 2]).

Folds are combined as the plan's `fold_combination` says (`FoldCombination`): nnU-Net's mean of
the logits, the mean of SCT's nnU-Net fork (nnunetv2-neuropoly 2.6.2's
`predict_logits_from_preprocessed_data` counts the first fold twice: weights 2, 1, ..., 1 over n),
or SCT 7's `lesion_ms` ensemble (`average_nnunet_predictions`: each fold's label map on the input
grid, their mean > 0.5; its soft map, `-soft-ms-lesion`, is each fold's lesion probability where
it beats the background, averaged).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
from scipy import ndimage, special

from lesionseg.core.enums import StrEnum
from lesionseg.core.wire import to_uint8
from lesionseg.server.pipelines import JsonPlan, Predict
from lesionseg.core.limits import check_resampled
from lesionseg.server.pipelines.nnunet_resample import compute_new_shape, resample

NORMALISATIONS = ("ZScoreNormalization", "CTNormalization", "NoNormalization", "RescaleTo01Normalization")


class FoldCombination(StrEnum):
    """How a task's folds make one answer (see the module docstring)."""

    MEAN = "mean"  # nnU-Net: the folds' logits averaged
    SCT_FORK = "sct_fork"  # nnunetv2-neuropoly: the first fold's logits counted twice
    VOTE = "vote"  # SCT 7's lesion_ms: the folds' label maps averaged, > 0.5


def combine_folds(logits: Sequence[np.ndarray], combination: str) -> np.ndarray:
    """One logit map from the folds' (MEAN and SCT_FORK; the fork's order of operations:
    sum, then divide by the number of folds when there are several)."""
    total = np.array(logits[0], np.float32, copy=True)
    if combination == FoldCombination.SCT_FORK:
        total += logits[0]  # `prediction = P(fold0)` then `prediction += P(fold0)`: no `else`
    for more in logits[1:]:
        total += more
    if len(logits) > 1:
        total /= len(logits)
    return total


@dataclasses.dataclass(frozen=True, kw_only=True)
class NnunetPlan(JsonPlan):
    """What inference needs from plans.json, dataset.json and the checkpoints (all from the export).

    Spacings and shapes are in nnU-Net's transposed axis order.
    """

    orientation: str
    transpose_forward: tuple[int, ...]
    transpose_backward: tuple[int, ...]
    spacing: tuple[float, ...]
    patch_size: tuple[int, ...]
    normalization: tuple[str, ...]
    use_mask_for_norm: tuple[bool, ...]
    intensity_properties: tuple[dict[str, float], ...]
    resampling_data: dict[str, Any]
    resampling_probabilities: dict[str, Any]
    num_classes: int
    labels: dict[str, int]
    mirror_axes: tuple[int, ...] = ()
    use_mirroring: bool = False
    tile_step_size: float = 0.5
    use_gaussian: bool = True
    networks: tuple[str, ...] = ()
    folds: tuple[str, ...] = ()  # the fold each network is (empty: folds merged into one network)
    fold_combination: str = FoldCombination.MEAN
    #: region-based models: the value each region (one sigmoid head each, in order) gives a voxel;
    #: `num_classes` is then the number of heads and `labels` maps each name to its head + 1
    regions_class_order: tuple[int, ...] = ()
    #: region-based models: the label values of each name's mask (dataset.json's, e.g. sc: [1, 2])
    label_values: dict[str, list[int]] = dataclasses.field(default_factory=dict)

    TUPLES: ClassVar[tuple[str, ...]] = (
        "transpose_forward", "transpose_backward", "spacing", "patch_size", "normalization", "use_mask_for_norm",
        "intensity_properties", "mirror_axes", "networks", "folds", "regions_class_order")

    def __post_init__(self) -> None:
        if self.fold_combination not in tuple(FoldCombination):
            raise ValueError(f"fold combination {self.fold_combination!r} is not one of {', '.join(FoldCombination)}")
        if self.fold_combination == FoldCombination.VOTE and self.num_classes != 2:
            raise ValueError(f"a fold vote needs a binary model (background and one class), not {self.num_classes} classes")
        if self.folds and len(self.folds) != len(self.networks):
            raise ValueError(f"{len(self.folds)} fold names for {len(self.networks)} networks")
        if len(self.patch_size) not in (2, 3) or len(self.spacing) != len(self.patch_size):
            raise ValueError(f"patch {list(self.patch_size)} and spacing {list(self.spacing)} are not one 2D or 3D configuration")
        if self.regions_class_order:
            if self.fold_combination == FoldCombination.VOTE:
                raise ValueError("a fold vote needs a binary model, not a region-based one")
            if len(self.regions_class_order) != self.num_classes:
                raise ValueError(f"{len(self.regions_class_order)} regions in regions_class_order for {self.num_classes} heads")

    @property
    def regions(self) -> bool:
        """Whether the model is region-based (sigmoid heads, `regions_class_order`)."""
        return bool(self.regions_class_order)

    def sent_axes_spacing(self) -> tuple[float | None, float | None, float | None]:
        """The spacing (mm) each axis of IMAGE as sent ((x, y, z) in the plan's orientation) is
        resampled to; None for a 2D plan's slice axis (kept)."""
        transposed = (None, *self.spacing) if len(self.spacing) == 2 else tuple(self.spacing)
        zyx = [transposed[list(self.transpose_forward).index(k)] for k in range(3)]  # axis k of (z, y, x)
        return (zyx[2], zyx[1], zyx[0])  # type: ignore[return-value]

    def target_spacing(self, spacing: Sequence[float]) -> tuple[float, ...]:
        """The spacing (transposed order) an image of `spacing` is resampled to: the plan's; a 2D
        configuration keeps the first axis's own (nnU-Net: no resampling across slices)."""
        if len(self.spacing) == len(spacing):
            return tuple(self.spacing)
        return (float(spacing[0]), *self.spacing)

    def fold_networks(self, chosen: Sequence[int] | None = None) -> tuple[str, ...]:
        """The networks of the folds at positions `chosen` (None: every fold).

        Raises:
            ValueError: a position out of range, repeated, or a choice on merged folds.
        """
        if chosen is None:
            return self.networks
        chosen = [int(i) for i in chosen]
        if not self.folds:
            raise ValueError("this task's folds are merged into one network; no fold can be chosen")
        if not chosen or len(set(chosen)) != len(chosen) or not all(0 <= i < len(self.networks) for i in chosen):
            raise ValueError(f"folds {chosen} are not distinct positions among the {len(self.networks)} folds {list(self.folds)}")
        return tuple(self.networks[i] for i in chosen)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Properties:
    """What postprocessing needs to undo preprocessing; shapes and spacing in transposed order."""

    shape_before_cropping: tuple[int, int, int]
    bbox: tuple[tuple[int, int], ...]
    shape_after_cropping: tuple[int, int, int]
    spacing: tuple[float, float, float]

    def pack(self) -> tuple[np.ndarray, np.ndarray]:
        ints = np.array([*self.shape_before_cropping, *[v for b in self.bbox for v in b], *self.shape_after_cropping], np.int64)
        return ints, np.asarray(self.spacing, np.float64)

    @classmethod
    def unpack(cls, ints: np.ndarray, spacing: np.ndarray) -> "Properties":
        v = [int(i) for i in ints]
        return cls(shape_before_cropping=tuple(v[0:3]), bbox=((v[3], v[4]), (v[5], v[6]), (v[7], v[8])),
                   shape_after_cropping=tuple(v[9:12]), spacing=tuple(float(s) for s in spacing))  # type: ignore[arg-type]


def nonzero_bbox(data: np.ndarray) -> tuple[np.ndarray, tuple[tuple[int, int], ...]]:
    """nnU-Net's `create_nonzero_mask` (holes filled) and its half-open bounding box."""
    mask = data[0] != 0
    for c in range(1, data.shape[0]):
        mask |= data[c] != 0
    mask = ndimage.binary_fill_holes(mask)
    bbox = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        bbox.append((int(present[0]), int(present[-1]) + 1) if present.size else (0, mask.shape[axis]))
    return mask, tuple(bbox)


def normalise(image: np.ndarray, scheme: str, *, mask: np.ndarray | None, props: Mapping[str, float]) -> np.ndarray:
    """One channel, nnU-Net's normalisation schemes (float32)."""
    image = image.astype(np.float32, copy=True)
    eps = 1e-8
    if scheme == "ZScoreNormalization":
        if mask is not None:
            mean, std = image[mask].mean(), image[mask].std()
            image[mask] = (image[mask] - mean) / max(std, eps)
        else:
            image -= image.mean()
            image /= max(image.std(), eps)
    elif scheme == "CTNormalization":
        np.clip(image, props["percentile_00_5"], props["percentile_99_5"], out=image)
        image -= props["mean"]
        image /= max(props["std"], eps)
    elif scheme == "RescaleTo01Normalization":
        image -= image.min()
        image /= max(float(image.max()), eps)
    elif scheme != "NoNormalization":
        raise ValueError(f"normalisation scheme {scheme!r} is not supported")
    return image


def preprocess(image_xyz: np.ndarray, spacing_xyz: Sequence[float], plan: NnunetPlan) -> tuple[np.ndarray, Properties]:
    """(x, y, z) volume -> network input (C, Z', Y', X') float32 at the plan spacing, and Properties."""
    data = np.ascontiguousarray(image_xyz.transpose(2, 1, 0))[None].astype(np.float32)  # SCT: (z, y, x)
    spacing = tuple(float(s) for s in spacing_xyz)[::-1]
    data = data.transpose([0, *[i + 1 for i in plan.transpose_forward]])
    spacing_t = tuple(spacing[i] for i in plan.transpose_forward)
    shape_before = tuple(int(s) for s in data.shape[1:])
    mask, bbox = nonzero_bbox(data)
    crop = tuple(slice(a, b) for a, b in bbox)
    data = data[(slice(None), *crop)]
    mask = mask[crop]
    shape_after = tuple(int(s) for s in data.shape[1:])
    target = plan.target_spacing(spacing_t)
    new_shape = compute_new_shape(shape_after, spacing_t, target)
    check_resampled(new_shape, channels=data.shape[0], what="IMAGE")
    for c in range(data.shape[0]):
        use_mask = plan.use_mask_for_norm[c] and plan.normalization[c] == "ZScoreNormalization"
        data[c] = normalise(data[c], plan.normalization[c], mask=mask if use_mask else None,
                            props=plan.intensity_properties[c] if plan.intensity_properties else {})
    data = resample(data, new_shape, spacing_t, target, **plan.resampling_data).astype(np.float32)
    return data, Properties(shape_before_cropping=shape_before, bbox=bbox, shape_after_cropping=shape_after, spacing=spacing_t)  # type: ignore[arg-type]


def predict_folds(plan: NnunetPlan, networks: Sequence[Predict]) -> Predict:
    """One `Predict` of the chosen fold networks (in plan order) for `sliding_window`: their logits
    combined (`combine_folds`), or stacked fold-major for a vote."""

    def predict(tiles: np.ndarray) -> np.ndarray:
        outs = [network(tiles) for network in networks]
        if plan.fold_combination == FoldCombination.VOTE:
            return np.concatenate(outs, axis=1)
        return combine_folds(outs, plan.fold_combination)

    return predict


def steps_for_sliding_window(image_size: Sequence[int], tile_size: Sequence[int], step: float) -> list[list[int]]:
    """nnU-Net's tile starts per axis: ceil((size - tile) / (tile * step)) + 1 steps, spread evenly."""
    steps = []
    for size, tile in zip(image_size, tile_size):
        n = int(np.ceil((size - tile) / (tile * step))) + 1
        actual = (size - tile) / (n - 1) if n > 1 else 99999999999
        steps.append([int(np.round(actual * i)) for i in range(n)])
    return steps


def gaussian_map(tile_size: Sequence[int], sigma_scale: float = 1.0 / 8, value_scaling_factor: float = 10.0) -> np.ndarray:
    """nnU-Net's importance map: a centred gaussian (sigma = tile/8) scaled to max 10, no zeros."""
    tmp = np.zeros(tile_size)
    tmp[tuple(i // 2 for i in tile_size)] = 1
    g = ndimage.gaussian_filter(tmp, [i * sigma_scale for i in tile_size], 0, mode="constant", cval=0)
    g = g / (g.max() / value_scaling_factor)
    g[g == 0] = g[g != 0].min()
    return g.astype(np.float32)


def pad_to_patch(data: np.ndarray, patch: Sequence[int]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Zero padding of the last len(patch) axes up to the patch size (difference // 2 before;
    nnU-Net's `pad_nd_image`), and the slicer of the spatial axes undoing it."""
    lead = data.ndim - 1 - len(patch)  # spatial axes the patch does not cover (a 2D patch: the slices)
    old = data.shape[1:]
    new = [*old[:lead], *[max(p, o) for p, o in zip(patch, old[lead:])]]
    below = [(n - o) // 2 for n, o in zip(new, old)]
    above = [(n - o) - b for n, o, b in zip(new, old, below)]
    padded = np.pad(data, [(0, 0), *zip(below, above)], mode="constant")
    return padded, tuple(slice(b, b + o) for b, o in zip(below, old))


def mirror_variants(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """All non-empty combinations of the spatial mirroring axes (nnU-Net's TTA)."""
    return [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]


def sliding_window(data: np.ndarray, plan: NnunetPlan, predict: Predict, *, mirroring: bool | None = None) -> np.ndarray:
    """Gaussian-weighted average of the network's logits over all tiles.

    A 2D patch is slid over each slice of the first axis (nnU-Net's order: slice, then tiles).

    Args:
        data: (C, Z, Y, X) preprocessed input.
        predict: runs the network on (N, C, *patch) tiles and returns (N, K, *patch) logits: K is
            num_classes for folds combined into one map, or folds x num_classes (fold-major) for
            a vote (the sum is linear, so each fold's map is what it would be alone).
        mirroring: nnU-Net's test-time mirroring (None: the plan's `use_mirroring`).
    Returns:
        (K, Z, Y, X) float32 logits.
    """
    patch = tuple(plan.patch_size)
    padded, unpad = pad_to_patch(data, patch)
    lead = padded.ndim - 1 - len(patch)
    steps = steps_for_sliding_window(padded.shape[1 + lead:], patch, plan.tile_step_size)
    starts = list(itertools.product(*[range(n) for n in padded.shape[1:1 + lead]], *steps))
    windows = [(*start[:lead], *[slice(s, s + p) for s, p in zip(start[lead:], patch)]) for start in starts]
    tiles = np.stack([padded[(slice(None), *window)] for window in windows])
    mirroring = plan.use_mirroring if mirroring is None else mirroring
    flips = mirror_variants([a + 2 for a in plan.mirror_axes]) if mirroring else []
    batch = np.concatenate([tiles, *[np.flip(tiles, axis) for axis in flips]]) if flips else tiles
    logits = predict(np.ascontiguousarray(batch, dtype=np.float32))
    n = len(tiles)
    tile_logits = logits[:n].astype(np.float32)
    for k, axis in enumerate(flips, start=1):
        tile_logits += np.flip(logits[k * n : (k + 1) * n], axis)
    tile_logits /= len(flips) + 1
    weight = gaussian_map(patch) if plan.use_gaussian else np.ones(patch, np.float32)
    total = np.zeros((tile_logits.shape[1], *padded.shape[1:]), np.float32)
    counts = np.zeros(padded.shape[1:], np.float32)
    for window, tile in zip(windows, tile_logits):
        total[(slice(None), *window)] += tile * weight
        counts[window] += weight
    total /= counts
    return total[(slice(None), *unpad)]


def _to_client_grid(volume: np.ndarray, props: Properties, plan: NnunetPlan) -> np.ndarray:
    """Paste a cropped (Z', Y', X') volume into its box, undo transpose_forward, go back to (x, y, z)."""
    full = np.zeros(props.shape_before_cropping, volume.dtype)
    full[tuple(slice(a, b) for a, b in props.bbox)] = volume
    full = full.transpose(plan.transpose_backward)
    return np.ascontiguousarray(full.transpose(2, 1, 0))  # (z, y, x) -> (x, y, z)


def postprocess(logits: np.ndarray, props: Properties, plan: NnunetPlan, *, probabilities: bool = False
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """(num_classes, Z', Y', X') logits -> uint8 label map on the client's (x, y, z) grid and,
    with `probabilities`, the softmax of each foreground class as uint8 (probability x 255),
    shaped (num_classes - 1, x, y, z); a region-based model: each region's sigmoid, shaped
    (num_classes, x, y, z). Outside the crop box the label is 0 and probabilities 0."""
    if plan.fold_combination == FoldCombination.VOTE:
        return vote(logits, props, plan, probabilities=probabilities)
    resampled = _resampled(logits, props, plan)
    if plan.regions:
        foreground = _sigmoid(resampled)
        labels = np.zeros(foreground.shape[1:], np.uint8)
        for head, value in enumerate(plan.regions_class_order):
            labels[foreground[head] > 0.5] = value
    else:
        labels = np.argmax(resampled, axis=0).astype(np.uint8)
        foreground = _softmax(resampled)[1:] if probabilities else None
    seg = _to_client_grid(labels, props, plan)
    if not probabilities:
        return seg, None
    return seg, np.stack([_to_client_grid(q, props, plan) for q in to_uint8(foreground)])


def _resampled(logits: np.ndarray, props: Properties, plan: NnunetPlan) -> np.ndarray:
    """Logits back at the spacing and shape of the cropped input (nnU-Net's
    `convert_predicted_logits_to_segmentation_with_correct_shape`)."""
    return resample(logits.astype(np.float32), props.shape_after_cropping, plan.target_spacing(props.spacing), props.spacing,
                    **plan.resampling_probabilities)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return special.expit(logits).astype(np.float32, copy=False)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=0, keepdims=True))
    return shifted / shifted.sum(axis=0, keepdims=True)


def vote(logits: np.ndarray, props: Properties, plan: NnunetPlan, *, probabilities: bool = False
         ) -> tuple[np.ndarray, np.ndarray | None]:
    """SCT 7's lesion_ms ensemble from (folds x 2, Z', Y', X') fold-major logits: each fold's logits
    resampled back and turned into its label map (its argmax), the maps averaged and kept > 0.5 (a
    majority of the folds; one fold alone: its own map). With `probabilities`, SCT's soft lesion map
    (`-soft-ms-lesion`): each fold's lesion probability where it beats the background, else 0,
    averaged over the folds, as uint8 (x 255), shaped (1, x, y, z)."""
    n = logits.shape[0] // plan.num_classes
    if n * plan.num_classes != logits.shape[0] or n == 0:
        raise ValueError(f"{logits.shape[0]} logit maps are not a whole number of {plan.num_classes}-class folds")
    votes = np.zeros(props.shape_after_cropping, np.float64)
    soft = np.zeros(props.shape_after_cropping, np.float64) if probabilities else None
    for fold in range(n):
        fold_logits = logits[fold * plan.num_classes : (fold + 1) * plan.num_classes].astype(np.float32)
        resampled = _resampled(fold_logits, props, plan)
        votes += np.argmax(resampled, axis=0)
        if soft is not None:
            p = _softmax(resampled)
            soft += np.where(p[1] > p[0], p[1], 0)
    seg = _to_client_grid((votes / n > 0.5).astype(np.uint8), props, plan)
    if soft is None:
        return seg, None
    return seg, _to_client_grid(to_uint8(soft / n), props, plan)[None]
