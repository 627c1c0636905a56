"""Client side of `lesionseg deepseg`: one gRPC call to a task ensemble, SCT-style outputs."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path

import numpy as np

from lesionseg.client import postprocessing
from lesionseg.core import __version__
from lesionseg.core.errors import InferenceError, UsageError
from lesionseg.client.nifti import Volume, atomic_write_text, load_volume, refuse_existing, save_volume, stem
from lesionseg.client.orientation import reorientation, sct_to_nib
from lesionseg.core.catalogue import task_info

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PostOptions:
    """sct_deepseg's post-processing flags; `threshold` in [0, 1] uses the class probability
    (strictly greater); 0 keeps the soft map."""

    threshold: float | None = None
    largest: int | None = None
    fill_holes: bool = False
    remove_small: tuple[float, str] | None = None

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise UsageError(f"-thr {self.threshold} must lie in [0, 1]")
        if self.threshold == 0 and (self.largest or self.fill_holes or self.remove_small):
            raise UsageError("-thr 0 keeps the soft map; -largest, -fill-holes and -remove-small need a binary mask")
        if self.largest is not None and self.largest < 1:
            raise UsageError(f"-largest {self.largest} must be at least 1")

    def apply(self, mask: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
        if self.fill_holes:
            mask = postprocessing.fill_holes(mask)
        if self.remove_small is not None:
            mask = postprocessing.remove_small(mask, *self.remove_small, spacing)
        if self.largest is not None:
            mask = postprocessing.keep_largest(mask, self.largest)
        return mask


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskResult:
    files: dict[str, Path]  # label name -> mask file
    labels: dict[str, int]
    masks: dict[str, np.ndarray]  # label name -> uint8 mask on the input grid


def infer_task(image: Volume, task: str, url: str | None = None, *, probabilities: bool = False, transport=None
               ) -> tuple[np.ndarray, np.ndarray | None, dict[str, str]]:
    """Send `image` to the `task` ensemble (through `transport`, else a server for `url`); returns
    (labels (x, y, z) uint8, class probabilities (C, x, y, z) uint8 0-255 or None, model parameters),
    both on the input's own grid and orientation."""
    from lesionseg.client.session import open_transport

    with open_transport(url, transport) as link:
        params = link.parameters(task)
        if "plan" not in params:
            raise UsageError(f"model {task!r} is not an nnU-Net task ensemble (use deepseg-lesion for the legacy models)")
        orient = reorientation(image.affine, image.data.shape, sct_to_nib(params.get("orientation", "LPI")))
        data = np.ascontiguousarray(orient.forward(image.data), dtype=np.float32)
        spacing = np.asarray(orient.forward_spacing(image.spacing), np.float32)
        outputs = ["SEG", "PROB"] if probabilities else ["SEG"]
        result = link.infer(task, {"IMAGE": data, "SPACING": spacing}, outputs, source=image.path,
                            output_shapes={"SEG": (data.shape, np.uint8)})
    seg = result["SEG"]
    if seg.shape != data.shape:
        raise InferenceError(f"{image.path}: server returned a mask of shape {seg.shape}, expected {data.shape}")
    prob = None
    if probabilities:
        prob = np.stack([orient.backward(p) for p in result["PROB"]])
    return orient.backward(seg), prob, params


def output_paths(image_path: Path, task: str, labels: dict[str, int], output: Path | None, *,
                 ofolder: Path | None = None) -> dict[str, Path]:
    """SCT's names: `<in><suffix>.nii.gz` for one foreground class, `<in>_<label>_seg.nii.gz` for several,
    in `ofolder` (default: the input's folder)."""
    foreground = [name for name, value in sorted(labels.items(), key=lambda kv: kv[1]) if value != 0]
    folder = output.parent if output is not None else (ofolder if ofolder is not None else image_path.parent)
    base = stem(output) if output is not None else stem(image_path)
    if len(foreground) == 1:
        if output is not None:
            return {foreground[0]: output}
        return {foreground[0]: folder / f"{base}{task_info(task).suffix}.nii.gz"}
    return {name: folder / f"{base}_{name}_seg.nii.gz" for name in foreground}


def sidecar(path: Path, *, task: str, params: dict[str, str], image_path: Path, argv: list[str] | None) -> Path:
    info = task_info(task)
    record = {
        "GeneratedBy": [{
            "Name": "lesionseg deepseg",
            "Version": __version__,
            "Command": " ".join(argv if argv is not None else sys.argv),
            "Task": task,
            "Model": {"source": params.get("source", ""), "url": info.url},
        }],
        "Sources": [str(Path(image_path).resolve())],
    }
    return atomic_write_text(path.with_name(stem(path) + ".json"), json.dumps(record, indent=2) + "\n")


def class_masks(seg: np.ndarray, prob: np.ndarray | None, params: dict[str, str], paths: dict[str, Path], *,
                task: str, options: PostOptions, spacing, to_grid=lambda m: m) -> dict[str, np.ndarray]:
    """The mask written for each class: SCT's soft map (-thr 0, or ivadomed ensembles by default),
    the probability > -thr, or the server's labels; `to_grid` maps a mask onto the input's grid
    before the morphological options."""
    labels = json.loads(params["plan"])["labels"]
    soft = options.threshold == 0 or (options.threshold is None and params.get("default_output") == "soft")
    if soft and (options.largest or options.fill_holes or options.remove_small):
        raise UsageError(f"{task} writes a soft map by default; give -thr to binarise it before -largest, -fill-holes or -remove-small")
    masks: dict[str, np.ndarray] = {}
    for name in paths:
        value = labels[name]
        if soft:
            masks[name] = to_grid(prob[value - 1].astype(np.float32) / 255.0)
            continue
        if options.threshold is not None:
            mask = postprocessing.threshold(prob[value - 1], options.threshold * 255)
        else:
            mask = (seg == value).astype(np.uint8)
        masks[name] = options.apply(to_grid(mask), spacing)
    return masks


def write_outputs(masks: dict[str, np.ndarray], paths: dict[str, Path], image: Volume, *, task: str,
                  params: dict[str, str], argv: list[str] | None) -> None:
    """Every mask and its JSON sidecar (all masks computed before: a failure leaves no partial output)."""
    for name, path in paths.items():
        save_volume(masks[name], image.affine, path, like=image.header)
        sidecar(path, task=task, params=params, image_path=image.path, argv=argv)


def segment_task(image_path: Path, task: str, *, output: Path | None = None, url: str | None = None,
                 options: PostOptions = PostOptions(), argv: list[str] | None = None, overwrite: bool = False,
                 transport=None, ofolder: Path | None = None) -> TaskResult:
    """Segment one image with a `sct_deepseg` task and write the masks (+ JSON sidecars).

    Masks go to `output`, else SCT's names in `ofolder`, else next to the input."""
    image = load_volume(image_path)
    if output is not None:
        refuse_existing([output], overwrite=overwrite)
    seg, prob, params = infer_task(image, task, url, probabilities=True, transport=transport)
    labels = json.loads(params["plan"])["labels"]
    paths = output_paths(image_path, task, labels, output, ofolder=ofolder)
    refuse_existing(paths.values(), overwrite=overwrite)
    masks = class_masks(seg, prob, params, paths, task=task, options=options, spacing=image.spacing)
    write_outputs(masks, paths, image, task=task, params=params, argv=argv)
    return TaskResult(files=paths, labels=labels, masks=masks)
