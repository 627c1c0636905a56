"""The models lesionseg knows, by the names client and server share: the sct_deepseg tasks (output
suffix, where SCT publishes each model) and the legacy sct_deepseg_lesion pipelines."""

from __future__ import annotations

import dataclasses

from lesionseg.core.errors import UsageError


@dataclasses.dataclass(frozen=True, kw_only=True)
class Task:
    """`url` is the default release; `releases` names every release lesionseg can install."""

    name: str
    suffix: str
    url: str
    description: str
    releases: dict[str, str | tuple[str, ...]] = dataclasses.field(default_factory=dict)


TASKS = {
    t.name: t
    for t in (
        Task(name="seg_ms_lesion", suffix="_lesion_seg", description="MS lesions, any contrast (nnU-Net 3d_fullres)",
             url="https://github.com/ivadomed/ms-lesion-agnostic/releases/download/r20241101/model_seg_ms_lesion_unet3d.zip"),
        Task(name="seg_ms_lesion_mp2rage", suffix="_lesion_seg", description="MS lesions on MP2RAGE UNI (nnU-Net)",
             url="https://github.com/ivadomed/model_seg_ms_mp2rage/releases/download/r20240610/"
                 "nnUNetTrainer_seg_ms_lesion_mp2rage__nnUNetPlans__3d_fullres.zip",
             releases={
                 # SCT 6.0-6.3: the ivadomed ensemble of 5 seeds (ONNX + JSON config each), averaged
                 "r20230210": tuple(
                     "https://github.com/ivadomed/model_seg_ms_mp2rage/releases/download/r20230210/"
                     f"model_seg_lesion_mp2rage_r20230210_dil32_seed0{seed}.zip" for seed in range(1, 6)),
             }),
        Task(name="seg_sc_contrast_agnostic", suffix="_seg", description="spinal cord, any contrast",
             url="https://github.com/sct-pipeline/contrast-agnostic-softseg-spinalcord/releases/download/v3.0/"
                 "model_contrast_agnostic_20250123.zip",
             releases={
                 # SCT 6.5: the MONAI checkpoint (PlainConvUNet, 6 stages, 32..384)
                 "v2.5": "https://github.com/sct-pipeline/contrast-agnostic-softseg-spinalcord/releases/download/v2.5/"
                         "model_contrast-agnostic_20240930-1002.zip",
             }),
    )
}


def release_url(task: Task, release: str | None) -> str | tuple[str, ...]:
    """The URL of `release` of `task` (None: the default release); several URLs for a release
    made of several zips (an ensemble's members)."""
    if release is None:
        return task.url
    if release not in task.releases:
        known = ", ".join(task.releases) or "only the default"
        raise UsageError(f"{task.name} has no release {release!r} ({known})")
    return task.releases[release]


def task_info(name: str) -> Task:
    """A known task, or a generic one for any other exported task (suffix `_seg`)."""
    return TASKS.get(name) or Task(name=name, suffix="_seg", url="", description="exported model")


#: sct_deepseg_lesion's contrasts (-c); each is served by the pipeline model `legacy_model(contrast)`.
LEGACY_CONTRASTS = ("t2", "t2_ax", "t2s")


def legacy_model(contrast: str) -> str:
    """The served pipeline model of a legacy contrast: deepseg_lesion_<contrast>."""
    return f"deepseg_lesion_{contrast}"
