"""The sct_deepseg task family on the client: `sct_deepseg -task ...` through a task model.

A task model (an nnU-Net ensemble, or a MONAI or ivadomed pipeline model: the same interface)
takes IMAGE (x, y, z) FP32 in its orientation and SPACING, and answers SEG (labels) and PROB
(uint8 class probabilities); its `plan` parameter names the labels. One image: send it
(`lesionseg.client.inference`), make each class's mask (soft map, probability > -thr, or the
labels; then -fill-holes, -remove-small, -largest), write SCT's names with JSON sidecars, the
lesion statistics and, with -qc, a QC entry. With `crop_to_cord`, the cord is segmented first
and the task runs on the image cropped around it (SCT's MP2RAGE recipe), the result pasted back.
`TaskJob` is the same for a batch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path

import numpy as np

from lesionseg.client import postprocessing
from lesionseg.client.batch.inputs import InputImage
from lesionseg.client.batch.runner import Subject
from lesionseg.client.connection import Connection
from lesionseg.client.crop import Box, cord_dilation, cropped_affine, mask_box, uncrop
from lesionseg.client.dicom.outputs import check_format, require_series, writes_dicom, writes_nifti
from lesionseg.client.images import load_image
from lesionseg.client.inference import infer_volume
from lesionseg.core.image import Image
from lesionseg.core.nifti import refuse_existing, save_nifti, stem
from lesionseg.core import __version__
from lesionseg.core.catalogue import task_info
from lesionseg.core.errors import InferenceError, UsageError
from lesionseg.core.files import atomic_write_text
from lesionseg.core.wire import UINT8_SCALE, from_uint8

logger = logging.getLogger(__name__)

ORIENTATION = "LPI"  # SCT's default for nnU-Net models whose config names none
CORD_TASK = "seg_sc_contrast_agnostic"


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
    """One image's masks: `files` (label name -> mask file, written unless `write_nifti` was
    False), `masks` (label name -> uint8 mask, or float32 soft map, on the input grid) and, with
    crop-to-cord, the `cord` mask the crop came from (uint8, input grid)."""

    files: dict[str, Path]
    labels: dict[str, int]
    masks: dict[str, np.ndarray]
    image: Image
    cord: np.ndarray | None = None


def infer_task(link: Connection, image: Image, task: str, *, probabilities: bool = False
               ) -> tuple[np.ndarray, np.ndarray | None, dict[str, str]]:
    """Send `image` to the `task` model; returns (labels (x, y, z) uint8, class probabilities
    (C, x, y, z) uint8 0-255 or None, model parameters), both on the input's own grid and orientation.

    Raises:
        UsageError: `task` is not a task model (e.g. a legacy pipeline).
    """
    task_parameters(link, task)
    reply = infer_volume(link, task, image, default_orientation=ORIENTATION,
                         outputs=["SEG", "PROB"] if probabilities else ["SEG"])
    prob = np.stack([reply.orient.backward(p) for p in reply.outputs["PROB"]]) if probabilities else None
    return reply.orient.backward(reply.outputs["SEG"]), prob, reply.parameters


def task_parameters(link: Connection, task: str) -> dict[str, str]:
    """The served `task` model's parameters, checked to be a task model's (a `plan` naming labels).

    Raises:
        UsageError: `task` is not a task model (e.g. a legacy pipeline).
    """
    params = link.parameters(task)
    if not json.loads(params.get("plan", "{}")).get("labels"):
        raise UsageError(f"model {task!r} is not an nnU-Net task ensemble (use deepseg-lesion for the legacy models)")
    return params


def task_labels(parameters: dict[str, str]) -> dict[str, int]:
    """The label name -> value map of a task model (from its `plan` parameter)."""
    return json.loads(parameters["plan"])["labels"]


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


def split_outputs(task: str, files: dict[str, Path]) -> tuple[Path | None, Path | None]:
    """(cord mask, lesion mask) among a task's outputs, by class name (one class: by SCT's suffix)."""
    cord, lesion = split_names(task, files)
    return (files[cord] if cord else None), (files[lesion] if lesion else None)


def split_names(task: str, names) -> tuple[str | None, str | None]:
    """(cord class, lesion class) among a task's class names (one class: by SCT's suffix)."""
    names = list(names)
    if len(names) == 1:
        (name,) = names
        return (None, name) if "lesion" in name or "lesion" in task_info(task).suffix else (name, None)
    lesion = next((name for name in names if "lesion" in name), None)
    cord = next((name for name in names if "lesion" not in name and ("cord" in name or name == "sc")), None)
    return cord, lesion


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
    labels = task_labels(params)
    soft = options.threshold == 0 or (options.threshold is None and params.get("default_output") == "soft")
    if soft and (options.largest or options.fill_holes or options.remove_small):
        raise UsageError(f"{task} writes a soft map by default; give -thr to binarise it before -largest, -fill-holes or -remove-small")
    masks: dict[str, np.ndarray] = {}
    for name in paths:
        value = labels[name]
        if soft:
            masks[name] = to_grid(from_uint8(prob[value - 1]))
            continue
        if options.threshold is not None:
            mask = postprocessing.threshold(prob[value - 1], options.threshold * UINT8_SCALE)
        else:
            mask = (seg == value).astype(np.uint8)
        masks[name] = options.apply(to_grid(mask), spacing)
    return masks


def cord_mask(link: Connection, image: Image, cord_task: str = CORD_TASK) -> np.ndarray:
    """`cord_task`'s cord mask of `image` (uint8, its grid).

    Raises:
        InferenceError: the cord task found no cord.
    """
    cord, _, _ = infer_task(link, image, cord_task)
    if not np.any(cord):
        raise InferenceError(f"{image.path}: {cord_task} found no spinal cord; cannot crop around it")
    return cord


def cord_box(link: Connection, image: Image, cord_task: str = CORD_TASK) -> Box:
    """The box of `image` around its cord (`cord_task`'s mask widened by `cord_dilation`).

    Raises:
        InferenceError: the cord task found no cord.
    """
    return mask_box(cord_mask(link, image, cord_task), cord_dilation(image.affine, image.spacing))


def segment_task(link: Connection, image: Path | Image, task: str, *, output: Path | None = None,
                 options: PostOptions = PostOptions(), argv: list[str] | None = None, overwrite: bool = False,
                 ofolder: Path | None = None, crop_to_cord: bool = False, cord_task: str = CORD_TASK,
                 write_nifti: bool = True) -> TaskResult:
    """Segment one image (a NIfTI file or DICOM series, see `lesionseg.client.images`) with a
    `sct_deepseg` task and write the masks (+ JSON sidecars) unless `write_nifti` is False.

    Masks go to `output`, else SCT's names in `ofolder`, else next to the input. With
    `crop_to_cord`, `task` runs on the image cropped around the cord (`cord_box`) and its masks
    are pasted back into the input grid. Every mask is computed before the first is written.
    """
    loaded = image if isinstance(image, Image) else load_image(image)
    volume = loaded
    if output is not None and write_nifti:
        refuse_existing([output], overwrite=overwrite)
    target, to_grid, cord = volume, (lambda m: m), None
    if crop_to_cord:
        cord = cord_mask(link, volume, cord_task)
        box = mask_box(cord, cord_dilation(volume.affine, volume.spacing))
        target = Image(path=volume.path, data=np.ascontiguousarray(volume.data[box.slices]),
                        affine=cropped_affine(volume.affine, box), header=volume.header)
        to_grid = lambda m: uncrop(m, box, volume.data.shape)  # noqa: E731
    seg, prob, params = infer_task(link, target, task, probabilities=True)
    labels = task_labels(params)
    paths = output_paths(volume.path, task, labels, output, ofolder=ofolder)
    if write_nifti:
        refuse_existing(paths.values(), overwrite=overwrite)
    masks = class_masks(seg, prob, params, paths, task=task, options=options, spacing=volume.spacing, to_grid=to_grid)
    if crop_to_cord:
        params = {**params, "source": params.get("source", "") + f" (cropped around {cord_task})"}
    if write_nifti:
        for name, path in paths.items():
            save_nifti(masks[name], volume.affine, path, like=volume.header)
            sidecar(path, task=task, params=params, image_path=volume.path, argv=argv)
    return TaskResult(files=paths, labels=labels, masks=masks, image=loaded, cord=cord)


def _foreground_voxels(mask: np.ndarray) -> int:
    """Voxels in a written mask: ones of a binary mask, >= the lesion statistics' soft threshold of a soft map."""
    from lesionseg.client.lesion_stats import SOFT_THRESHOLD

    return int((mask >= SOFT_THRESHOLD).sum()) if mask.dtype.kind == "f" else int((mask > 0).sum())


@dataclasses.dataclass(frozen=True, kw_only=True)
class Segmented:
    """What one image's `TaskJob.segment` wrote: masks by class (NIfTI, when written), other files
    (lesion statistics, DICOM SEG and SR, the QC entry), and a one-line note for a batch summary."""

    masks: dict[str, Path]
    other: list[Path]
    note: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskJob:
    """`sct_deepseg -task` for one image or every image of a batch: masks, sidecars, lesion
    statistics, with `output_format` dicom or both a DICOM SEG and SR (DICOM inputs), and (with
    `qc`) a QC entry; in a batch, outputs in `ofolder` mirroring each image's place in its dataset."""

    task: str
    options: PostOptions = PostOptions()
    crop_to_cord: bool = False
    qc: Path | None = None
    ofolder: Path | None = None
    output_format: str = "nifti"
    dicom_qc: bool = False  # with DICOM output, also a Secondary Capture of the QC mosaic

    def __post_init__(self) -> None:
        check_format(self.output_format, dicom_qc=self.dicom_qc)

    @property
    def model(self) -> str:
        return self.task

    @property
    def description(self) -> str:
        return f"deepseg {self.task}"

    @property
    def nifti(self) -> bool:
        return writes_nifti(self.output_format)

    def folder(self, image: ImageImage) -> Path | None:
        return None if self.ofolder is None else self.ofolder / image.relative

    def segment(self, link: Connection, image: Path | Image, *, output: Path | None = None, ofolder: Path | None = None,
                overwrite: bool = False, cord: np.ndarray | None = None) -> Segmented:
        """Segment `image` (a NIfTI file, a DICOM series or a loaded `Image`); write masks,
        sidecars, lesion statistics, DICOM SEG and SR and (with `qc`) the QC entry, as
        `output_format` says. `cord` (a cord mask on the image's grid) is the cord of the SEG and
        QC when the task itself gives none.

        Raises:
            UsageError: DICOM output asked of a NIfTI input; OutputExistsError.
        """
        from lesionseg.client.lesion_stats import mask_stats, mask_volume, write_sidecars

        loaded = image if isinstance(image, Image) else load_image(image)
        require_series(loaded, self.output_format)
        dicom_files = self._dicom_paths(loaded.path, ofolder)
        if dicom_files:
            refuse_existing(dicom_files.values(), overwrite=overwrite)
        result = segment_task(link, loaded, self.task, output=output, options=self.options, overwrite=overwrite,
                              ofolder=ofolder, crop_to_cord=self.crop_to_cord, write_nifti=self.nifti)
        volume = loaded
        other: list[Path] = []
        note = ", ".join(f"{name}: {_foreground_voxels(m)} vox" for name, m in result.masks.items())
        cord_name, lesion_name = split_names(self.task, result.masks)
        cord = result.masks[cord_name] if cord_name else (result.cord if result.cord is not None else cord)
        lesion, stats = None, None
        if lesion_name is not None:
            lesion = mask_volume(result.masks[lesion_name], volume, result.files[lesion_name])
            stats = mask_stats(lesion)
            if self.nifti:
                other.append(write_sidecars(stats, lesion.path)[0])  # the TSV is listed; its JSON twin sits beside it
            note = f"{stats.count} lesions, {stats.total_volume_mm3:.1f} mm3"
            logger.info("%s: %s", lesion.path, note)
        if dicom_files:
            from lesionseg.client.dicom.outputs import write_dicom
            from lesionseg.client.dicom.results import Algorithm
            from lesionseg.client.lesion_stats import lesion_voxels

            algorithm = Algorithm.of_model(self.task, link.parameters(self.task))
            other.extend(write_dicom(loaded.series, dicom_files, algorithm, stats=stats, cord=cord, image=volume,  # type: ignore[arg-type]
                                     lesion=lesion_voxels(lesion) if lesion is not None else None).values())
        if self.qc is not None:
            from lesionseg.client.qc.masks import write_qc

            cord_source = result.files[cord_name] if cord_name else f"{CORD_TASK} cord"
            other.append(write_qc(self.qc, volume, cord=cord, cord_source=cord_source, lesion=lesion,
                                  fname_seg=result.files[cord_name] if cord_name else None, command="deepseg",
                                  contrast=self.task))
        return Segmented(masks=result.files if self.nifti else {}, other=other, note=note)

    def _dicom_paths(self, image_path: Path, ofolder: Path | None) -> dict[str, Path]:
        if not writes_dicom(self.output_format):
            return {}
        from lesionseg.client.dicom.outputs import dicom_paths

        return dicom_paths(image_path, self.task, ofolder if ofolder is not None else Path(image_path).parent, qc=self.dicom_qc)

    def plan(self, link: Connection, image: ImageImage) -> Subject:
        """The subject's outputs, from the served model's labels (it must be a task model)."""
        from lesionseg.client.lesion_stats import sidecar_paths

        labels = task_labels(task_parameters(link, self.task))
        paths = output_paths(image.path, self.task, labels, None, ofolder=self.folder(image))
        grid, other = (), list(self._dicom_paths(image.path, self.folder(image)).values())
        if self.nifti:
            grid = tuple(paths.values())
            other += [p.with_name(stem(p) + ".json") for p in paths.values()]
            _, lesion = split_outputs(self.task, paths)
            if lesion is not None:
                other += list(sidecar_paths(lesion))
        return Subject(image=image, grid_outputs=grid, other_outputs=tuple(other))

    def run(self, link: Connection, subject: Subject) -> str:
        """Segment one subject (its existing outputs were refused, or accepted with --resume /
        --overwrite, before the batch started); returns the summary's note."""
        return self.segment(link, subject.image.path, ofolder=self.folder(subject.image), overwrite=True).note
