"""The sct_deepseg task family: `sct_deepseg -task ...` through a task model (an nnU-Net ensemble,
or a MONAI or ivadomed pipeline model: the same interface, `lesionseg.core.interface`).

`TaskJob.segment` sends the image in the task's orientation and makes each foreground class's
mask: SCT's soft map (-thr 0, or an ivadomed ensemble by default), the class probability > -thr,
or the server's labels; then -fill-holes, -remove-small, -largest. With `crop_to_cord`, the cord
is segmented first and the task runs on the image cropped around it (SCT's MP2RAGE recipe), its
masks pasted back. Each cord task runs at most once per image, whatever uses its mask (the crop,
the cord of the DICOM results and of QC).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Mapping

import numpy as np

from lesionseg.client import postprocessing
from lesionseg.client.crop import FACES, Box, box_mask, box_of_faces, cord_dilation, cropped_affine, faces_of, mask_box
from lesionseg.client.crop import touching_faces, truncation_warning, uncrop, with_faces
from lesionseg.client.inference import infer_labels, send
from lesionseg.client.lesion_stats import image_stats, lesion_voxels
from lesionseg.client.result import CROPBOX, Map, Outputs, Result
from lesionseg.client.servers import Server, ServerPool
from lesionseg.core.catalogue import canonical, task_info
from lesionseg.core.errors import InferenceError, ModelNotFoundError, UsageError
from lesionseg.core.image import Image
from lesionseg.core.interface import CROP_PAD_KEYS, ModelInfo, ModelKind, Tensor, single_fold_position
from lesionseg.core.nifti import stem
from lesionseg.core.wire import UINT8_SCALE, from_uint8

logger = logging.getLogger(__name__)

#: the cord task of --crop-to-cord
CORD_TASK = "seg_sc_contrast_agnostic"
#: sc-crop's served cord detector (`lesionseg.server.repository.sccrop`)
SCCROP = "sccrop"


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
        if self.threshold == 0 and self.morphology:
            raise UsageError("-thr 0 keeps the soft map; -largest, -fill-holes and -remove-small need a binary mask")
        if self.largest is not None and self.largest < 1:
            raise UsageError(f"-largest {self.largest} must be at least 1")

    @property
    def morphology(self) -> bool:
        """Whether any option needs a binary mask."""
        return bool(self.largest or self.fill_holes or self.remove_small)

    def apply(self, mask: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
        if self.fill_holes:
            mask = postprocessing.fill_holes(mask)
        if self.remove_small is not None:
            mask = postprocessing.remove_small(mask, *self.remove_small, spacing)
        if self.largest is not None:
            mask = postprocessing.keep_largest(mask, self.largest)
        return mask


#: SCT 7's name of the soft lesion map of `-soft-ms-lesion` (in place of the lesion mask)
SOFT_LESION_SUFFIX = "_msLesionSoft"


def output_paths(image_path: Path, task: str, labels: dict[str, int], output: Path | None, *,
                 ofolder: Path | None = None, soft_lesion: bool = False) -> dict[str, Path]:
    """SCT's names: `<in><suffix>.nii.gz` for one foreground class (`<in>_msLesionSoft.nii.gz`
    with `soft_lesion`), `<in>_<label>_seg.nii.gz` for several, in `ofolder` (default: the input's folder)."""
    foreground = [name for name, value in sorted(labels.items(), key=lambda kv: kv[1]) if value != 0]
    folder = output.parent if output is not None else (ofolder if ofolder is not None else image_path.parent)
    base = stem(output) if output is not None else stem(image_path)
    if len(foreground) == 1:
        if output is not None:
            return {foreground[0]: output}
        suffix = SOFT_LESION_SUFFIX if soft_lesion else task_info(task).suffix
        return {foreground[0]: folder / f"{base}{suffix}.nii.gz"}
    return {name: folder / f"{base}_{name}_seg.nii.gz" for name in foreground}


def split_names(task: str, names) -> tuple[str | None, str | None]:
    """(cord class, lesion class) among a task's class names (one class: by SCT's suffix)."""
    names = list(names)
    if len(names) == 1:
        (name,) = names
        return (None, name) if "lesion" in name or "lesion" in task_info(task).suffix else (name, None)
    lesion = next((name for name in names if "lesion" in name), None)
    cord = next((name for name in names if "lesion" not in name and ("cord" in name or name == "sc")), None)
    return cord, lesion


def served_task(servers: ServerPool, name: str) -> tuple[str, str | None]:
    """The served task a user's `name` means, and a note when that is not `name` itself: a model
    served under `name` wins (a repository installed under SCT 6's names keeps working); else
    SCT 6's name of a task means SCT 7's (`lesionseg.core.catalogue.canonical`)."""
    new, note = canonical(name)
    if note is None or servers.serves(name) or not servers.serves(new):
        return name, None
    return new, note


def _task_model(servers: ServerPool, name: str) -> ModelInfo:
    info = servers.model(name)
    if info.kind != ModelKind.TASK:
        raise UsageError(f"model {name!r} is not an nnU-Net task ensemble (use deepseg-lesion for the legacy models)")
    return info


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskJob:
    """`sct_deepseg -task <task>` on the servers of `servers` (see the module docstring);
    `cord_task`: a cord task whose mask is the cord of the DICOM results and QC when the task
    itself gives none (the gateway's routes); `probabilities`: the result also holds each
    class's probability map.

    Raises:
        UsageError: the task is not a task model, or options it cannot take (-largest and the
            like on a task whose default output is a soft map, without -thr);
        ModelNotFoundError: a model it needs is not served.
    """

    servers: ServerPool
    task: str
    options: PostOptions = PostOptions()
    crop_to_cord: bool = False
    cord_task: str | None = None
    probabilities: bool = False
    test_time_aug: bool = False
    single_fold: bool = False
    soft_lesion: bool = False
    box: Mapping[str, int | None] = dataclasses.field(default_factory=dict)
    info: ModelInfo = dataclasses.field(init=False)
    crop_cord: str = dataclasses.field(init=False)  # the served cord task of --crop-to-cord
    cords: dict[str, ModelInfo] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        info = _task_model(self.servers, self.task)
        plan = info.plan
        if self.single_fold and len(plan.get("folds") or ()) < 2:
            raise UsageError(f"-single-fold: {self.task} is not an ensemble of separate folds")
        if self.test_time_aug and "mirror_axes" not in plan:
            raise UsageError(f"-test-time-aug: {self.task} is not an nnU-Net task")
        if self.soft_lesion and (len(info.foreground) != 1 or split_names(self.task, info.foreground)[1] is None):
            raise UsageError(f"-soft-ms-lesion: {self.task} does not segment lesions alone (classes: {', '.join(info.foreground)})")
        if self.soft_lesion and self.options.threshold is not None:
            raise UsageError("-soft-ms-lesion writes the soft lesion map; -thr would binarise it")
        if self.soft(info) and self.options.morphology:
            raise UsageError(f"{self.task} writes a soft map by default; give -thr to binarise it before -largest, "
                             "-fill-holes or -remove-small")
        given = {face: value for face, value in self.box.items() if value is not None}
        if given and info.crop_padding is None:
            raise UsageError(f"-box-* options are only valid for models using the sc-crop pipeline ({self.task} is not one)")
        if info.crop_padding is not None and self.crop_to_cord:
            raise UsageError(f"{self.task} runs on sc-crop's cord box; --crop-to-cord would crop twice")
        object.__setattr__(self, "box", given)
        crop_cord = served_task(self.servers, CORD_TASK)[0] if self.crop_to_cord else CORD_TASK
        cords = [crop_cord] if self.crop_to_cord else []
        cords += [self.cord_task] if self.cord_task and self.cord_task not in cords else []
        object.__setattr__(self, "info", info)
        object.__setattr__(self, "crop_cord", crop_cord)
        object.__setattr__(self, "cords", {name: _task_model(self.servers, name) for name in cords})
        detecting = [name for name, model in ((self.task, info), *self.cords.items()) if model.crop_padding is not None
                     and not (name == self.task and len(given) == len(FACES))]
        if detecting:
            try:
                self.servers.model(SCCROP)
            except ModelNotFoundError:
                raise ModelNotFoundError(f"{detecting[0]} runs on sc-crop's cord box, and the server has no {SCCROP} model: "
                                         "lesionseg models install sc-crop (or give all six -box-* faces)") from None

    @property
    def model(self) -> str:
        return self.task

    @property
    def description(self) -> str:
        return f"deepseg {self.task}"

    def soft(self, info: ModelInfo) -> bool:
        """Whether each class's mask is its soft map (-thr 0, -soft-ms-lesion, or the task's default)."""
        return self.soft_lesion or self.options.threshold == 0 or (self.options.threshold is None and info.soft_by_default)

    def request_options(self) -> dict[str, np.ndarray]:
        """The nnU-Net task's optional inputs for -test-time-aug and -single-fold."""
        options: dict[str, np.ndarray] = {}
        if self.test_time_aug:
            options[Tensor.TTA] = np.array([True])
        if self.single_fold:
            options[Tensor.FOLDS] = np.array([single_fold_position(self.info.plan["folds"])], np.int32)
        return options

    def outputs(self, path: Path, folder: Path | None, *, output: Path | None = None) -> Outputs:
        """SCT's names (`output_paths`) in `folder` (default: next to the input), or `output`."""
        paths = output_paths(Path(path), self.task, self.info.labels, output, ofolder=folder, soft_lesion=self.soft_lesion)
        _, lesion = split_names(self.task, paths)
        maps = {}
        if self.info.crop_padding is not None:  # SCT 7: <-o, else the input>_cropbox.nii.gz
            base = output if output is not None else (folder or Path(path).parent) / Path(path).name
            maps[CROPBOX] = base.with_name(stem(base) + "_cropbox.nii.gz")
        return Outputs(masks=paths, named=paths, maps=maps, generated_by=True, lesion_file=paths[lesion] if lesion else None,
                       folder=folder if folder is not None else Path(path).parent, command="deepseg", contrast=self.task)

    def segment(self, image: Image) -> Result:
        """Segment `image` with the task (see the module docstring).

        Raises:
            InferenceError: the server refused the image, or the crop's cord task found no cord;
                ServerUnavailableError.
        """
        (masks, probabilities, cord, crop), address = self.servers.run(lambda server: self._segment(server, image))
        maps, note = {}, f" (cropped around {self.crop_cord})" if crop is True else ""
        if isinstance(crop, Box):
            maps[CROPBOX] = Map(data=box_mask(image.data.shape, crop).astype(np.float32), affine=image.affine)
            note = " (on sc-crop's cord box " + ", ".join(f"{k} {v}" for k, v in faces_of(crop).items()) + ")"
        cord_name, lesion_name = split_names(self.task, masks)
        if cord_name:
            cord = masks[cord_name]
        stats = image_stats(masks[lesion_name], image) if lesion_name else None
        result = Result(image=image, model=self.info, masks=masks, lesion=lesion_name, cord_class=cord_name, cord=cord,
                        cord_source=f"{self.crop_cord} cord", stats=stats, probabilities=probabilities, server=address,
                        source_note=note, maps=maps)
        logger.info("%s: %s", image.path, result.note)
        return result

    def _segment(self, server: Server, image: Image):
        """(class masks and, when asked, probabilities on the image's grid; the cord mask other
        than a class; True when cropped around the cord task's mask, the Box when cropped to
        sc-crop's box, else False)."""
        cords: dict[str, np.ndarray] = {}

        def cord_of(name: str) -> np.ndarray:
            if name not in cords:
                model = self.cords[name]
                if model.crop_padding is None:
                    cords[name] = infer_labels(server, model, image)
                else:  # a cord task on sc-crop's box (SCT 7's spinalcord): detected for it, pasted back
                    box = self._detected_box(server, image, model.crop_padding, {})
                    cords[name] = uncrop(infer_labels(server, model, _cropped(image, box)), box, image.data.shape)
            return cords[name]

        target, to_grid = image, (lambda m: m)
        if self.crop_to_cord:
            around = cord_of(self.crop_cord)
            if not np.any(around):
                raise InferenceError(f"{image.path}: {self.crop_cord} found no spinal cord; cannot crop around it")
            box = mask_box(around, cord_dilation(image.affine, image.spacing))
            target = _cropped(image, box)
            to_grid = lambda m: uncrop(m, box, image.data.shape)  # noqa: E731
        cord_box = self._detected_box(server, image, self.info.crop_padding, self.box) if self.info.crop_padding is not None else None
        if cord_box is not None:
            target = _cropped(image, cord_box)
            to_grid = lambda m: uncrop(m, cord_box, image.data.shape)  # noqa: E731
        soft, threshold = self.soft(self.info), self.options.threshold
        wanted = self.probabilities or soft or threshold is not None
        reply = send(server, self.info, target, outputs=[Tensor.SEG, Tensor.PROB] if wanted else [Tensor.SEG],
                     options=self.request_options())
        seg = reply.back(Tensor.SEG)
        masks: dict[str, np.ndarray] = {}
        probabilities: dict[str, np.ndarray] = {}
        for name, value in self.info.foreground.items():
            prob = reply.orient.backward(reply.outputs[Tensor.PROB][value - 1]) if wanted else None
            if self.probabilities:
                probabilities[name] = to_grid(from_uint8(prob))
            if soft:
                masks[name] = to_grid(from_uint8(prob))
                continue
            if threshold is not None:
                mask = postprocessing.threshold(prob, threshold * UINT8_SCALE)  # type: ignore[arg-type]
            else:
                mask = np.isin(seg, self.info.mask_values(name)).astype(np.uint8)
            masks[name] = self.options.apply(to_grid(mask), image.spacing)
        if cord_box is not None:
            binary = [lesion_voxels(m) for m in masks.values()]
            touched = touching_faces(np.logical_or.reduce(binary) if binary else np.zeros(image.data.shape, bool), cord_box)
            if touched:
                logger.warning("%s: %s", image.path, truncation_warning(touched, "*_cropbox.nii.gz"))  # SCT's words
        if self.crop_to_cord:
            return masks, probabilities, cords[self.crop_cord], True
        needs_cord = self.cord_task and split_names(self.task, masks)[0] is None
        return masks, probabilities, cord_of(self.cord_task) if needs_cord else None, cord_box or False  # type: ignore[arg-type]

    @staticmethod
    def _detected_box(server: Server, image: Image, padding: Mapping[str, float], faces: Mapping[str, int]) -> Box:
        """SCT 7's crop box for a model with sc-crop margins `padding` (mm): all six `faces`
        (-box-*), else sc-crop's detection (the served `sccrop`) with the faces given put over it;
        no cord found and some faces given: the whole image with those faces (SCT's fallback)."""
        if len(faces) == len(FACES):
            return box_of_faces(faces, image.data.shape)
        inputs = {Tensor.IMAGE: np.ascontiguousarray(image.data, np.float32), Tensor.AFFINE: np.asarray(image.affine, np.float64),
                  Tensor.SPACING: np.asarray(image.spacing, np.float32),
                  Tensor.PADDING: np.array([padding[k] for k in CROP_PAD_KEYS], np.float32)}
        assert server.transport is not None  # the pool hands out answering servers only
        try:
            found = server.transport.infer(SCCROP, {str(k): v for k, v in inputs.items()}, [str(Tensor.BOX)], source=image.path)
        except InferenceError as exc:
            if "no spinal cord detected" not in str(exc) or not faces:
                raise
            return with_faces(None, faces, image.data.shape)
        detected = dict(zip(FACES, (int(v) for v in found[Tensor.BOX].reshape(-1))))
        return with_faces(box_of_faces(detected, image.data.shape), faces, image.data.shape)


def _cropped(image: Image, box: Box) -> Image:
    """`image` cut to `box`, its affine moved to the box's first voxel."""
    return image.with_data(np.ascontiguousarray(image.data[box.slices]), affine=cropped_affine(image.affine, box))
