"""The models lesionseg knows, by the names client and server share: SCT 7's sct_deepseg tasks
(output suffix, where SCT publishes each release, SCT's model folder, whether the model runs on
sc-crop's cord box, how its folds combine), SCT 6's names for them, and the legacy
sct_deepseg_lesion pipelines.

Sources: SCT's `spinalcordtoolbox/deepseg/models.py` at the 7.3 tag and at `master` (7.4.dev0,
2026-08-19). SCT pins no checksums (its catalogue has URLs only, provenance in `source.json`); a
download's checksum is recorded when first verified and every later copy must match it
(`lesionseg.export.install`).
"""

from __future__ import annotations

import dataclasses

from lesionseg.core.errors import UsageError

GITHUB_RELEASES = "https://github.com"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Release:
    """One release of a task's model.

    `urls`: one zip, or several: the folds of one nnU-Net model (SCT unpacks them into one model
    folder) or an ivadomed ensemble's members. `cropped`: trained on sc-crop's cord boxes (SCT
    detects the cord and segments the box; the padding is in the zip's crop_metadata.json).
    `fold_combination`: `lesionseg.server.pipelines.nnunet.FoldCombination`'s value.
    """

    name: str
    urls: tuple[str, ...]
    sct: str
    cropped: bool = False
    fold_combination: str = "sct_fork"


def _folds(base: str) -> tuple[str, ...]:
    return tuple(f"{base}/model_fold{k}.zip" for k in range(5))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Task:
    """An sct_deepseg task; `releases[0]` is the default (the newest SCT's), `sct_model` the name
    of its folder in an SCT installation (`$SCT_DIR/data/deepseg_models/<sct_model>`), `old_name`
    SCT 6's task name."""

    name: str
    suffix: str
    description: str
    releases: tuple[Release, ...] = ()
    sct_model: str = ""
    old_name: str | None = None
    old_release: str | None = None  # the release SCT 6's name meant (what a model served under it came from)

    @property
    def default(self) -> Release | None:
        return self.releases[0] if self.releases else None

    @property
    def url(self) -> str:
        """The default release's URL(s), space-separated (as recorded in a model's `source`)."""
        return " ".join(self.default.urls) if self.default else ""

    def release(self, name: str | None) -> Release:
        """The release called `name` (None: the default).

        Raises:
            UsageError: no such release.
        """
        if name is None and self.default is not None:
            return self.default
        for release in self.releases:
            if release.name == name:
                return release
        known = ", ".join(r.name for r in self.releases) or "none"
        raise UsageError(f"{self.name} has no release {name!r} (releases: {known})")


_MULTICONTRAST = "https://github.com/ivadomed/seg-sc-ms-lesion-multicontrast/releases/download"
_AGNOSTIC_LESION = "https://github.com/ivadomed/ms-lesion-agnostic/releases/download"
_CONTRAST_AGNOSTIC = "https://github.com/sct-pipeline/contrast-agnostic-softseg-spinalcord/releases/download"
_MP2RAGE = "https://github.com/ivadomed/model_seg_ms_mp2rage/releases/download"
_AXIAL_T2 = "https://github.com/ivadomed/model-seg-ms-axial-t2w/releases/download"

TASKS = {
    t.name: t
    for t in (
        Task(name="lesion_ms", old_name="seg_ms_lesion", old_release="r20241101", suffix="_lesion_seg", sct_model="model_seg_ms_lesion",
             description="MS lesions, any contrast (nnU-Net, 5 folds voting, on sc-crop's cord box)",
             releases=(
                 Release(name="r20260703", urls=_folds(f"{_MULTICONTRAST}/r20260703"), sct="master (7.4.dev0)", cropped=True,
                         fold_combination="vote"),
                 Release(name="r20250909", urls=_folds(f"{_AGNOSTIC_LESION}/r20250909"), sct="7.2, 7.3", fold_combination="vote"),
                 Release(name="r20241101", urls=(f"{_AGNOSTIC_LESION}/r20241101/model_seg_ms_lesion_unet3d.zip",), sct="6.5, 7.0",
                         fold_combination="mean"),
             )),
        Task(name="lesion_ms_mp2rage", old_name="seg_ms_lesion_mp2rage", old_release="r20240610", suffix="_lesion_seg", sct_model="model_seg_ms_lesion_mp2rage",
             description="MS lesions on MP2RAGE UNI (nnU-Net; crop to the cord first: --crop-to-cord)",
             releases=(
                 Release(name="r20240610", sct="6.4 to master",
                         urls=(f"{_MP2RAGE}/r20240610/nnUNetTrainer_seg_ms_lesion_mp2rage__nnUNetPlans__3d_fullres.zip",)),
                 # SCT 6.0-6.3: the ivadomed ensemble of 5 seeds (ONNX + JSON config each), averaged
                 Release(name="r20230210", sct="6.0 to 6.3", urls=tuple(
                     f"{_MP2RAGE}/r20230210/model_seg_lesion_mp2rage_r20230210_dil32_seed0{seed}.zip" for seed in range(1, 6))),
             )),
        Task(name="lesion_ms_axial_t2", suffix="_lesion_seg", sct_model="model_seg_ms_sc_lesion_bavaria_quebec_nnunet",
             description="MS lesions and the cord on axial T2w (2D nnU-Net, region-based: <in>_sc_seg, <in>_lesion_seg)",
             releases=(
                 Release(name="r20241111", urls=(f"{_AXIAL_T2}/r20241111/model_bavaria_quebec_axial_t2w_ms.zip",), sct="7.0 to master"),
             )),
        Task(name="spinalcord", old_name="seg_sc_contrast_agnostic", old_release="v3.0", suffix="_seg", sct_model="model_seg_sc_contrast_agnostic_nnunet",
             description="spinal cord, any contrast (contrast-agnostic nnU-Net, on sc-crop's cord box)",
             releases=(
                 Release(name="v4.0", urls=(f"{_CONTRAST_AGNOSTIC}/v4.0/model_contrast_agnostic_20260628.zip",),
                         sct="master (7.4.dev0)", cropped=True),
                 Release(name="v3.0", urls=(f"{_CONTRAST_AGNOSTIC}/v3.0/model_contrast_agnostic_20250123.zip",), sct="7.0 to 7.3"),
                 # SCT 6.5: the MONAI checkpoint (PlainConvUNet, 6 stages, 32..384)
                 Release(name="v2.5", urls=(f"{_CONTRAST_AGNOSTIC}/v2.5/model_contrast-agnostic_20240930-1002.zip",), sct="6.5"),
             )),
    )
}

#: SCT 6's task names: still accepted, with one line naming SCT 7's (as SCT's own transition did)
ALIASES = {task.old_name: task.name for task in TASKS.values() if task.old_name}


def canonical(name: str) -> tuple[str, str | None]:
    """SCT 7's name of task `name` and, for SCT 6's name, the one-line note saying so."""
    if name in ALIASES:
        return ALIASES[name], f"{name} is SCT 6's name of {ALIASES[name]} (SCT 7): using {ALIASES[name]}"
    return name, None


def release_url(task: Task, release: str | None) -> str | tuple[str, ...]:
    """The URL of `release` of `task` (None: the default release); several URLs for a release
    made of several zips (folds, or an ensemble's members)."""
    urls = task.release(release).urls
    return urls[0] if len(urls) == 1 else urls


def task_info(name: str) -> Task:
    """A known task (by SCT 7's or SCT 6's name), or a generic one for any other exported task (suffix `_seg`)."""
    return TASKS.get(canonical(name)[0]) or Task(name=name, suffix="_seg", description="exported model")


def model_url(name: str) -> str:
    """The release URL(s) a model served as `name` came from by default: SCT 6's name means the
    release it named then (a repository installed under it), SCT 7's its default release."""
    if name in ALIASES:
        task = TASKS[ALIASES[name]]
        return " ".join(task.release(task.old_release).urls)
    return task_info(name).url


#: sct_deepseg_lesion's contrasts (-c); each is served by the pipeline model `legacy_model(contrast)`.
LEGACY_CONTRASTS = ("t2", "t2_ax", "t2s")


def legacy_model(contrast: str) -> str:
    """The served pipeline model of a legacy contrast: deepseg_lesion_<contrast>."""
    return f"deepseg_lesion_{contrast}"
