"""Test support: realistic nnU-Net v2 model folders with random weights, for the tests and the
benchmarks (bench/ puts tests/ on its path).

Each folder has nnU-Net's layout (`<trainer>__<plans>__<configuration>/` with plans.json,
dataset.json and `fold_N/checkpoint_final.pth`) and plans in nnU-Net's format: anisotropic spacing
and kernels, a transpose, ZScore or CT normalisation, PlainConvUNet or ResidualEncoderUNet, or the
old (`UNet_class_name`) plans format; a 2D configuration; region-based labels; a model's own
`trainer_class.py` (SCT 7.2+ loads it) whose trainer builds its own architecture.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

TRAINER = "nnUNetTrainer"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Variant:
    name: str
    architecture: str = "PlainConvUNet"  # or ResidualEncoderUNet
    normalization: str = "ZScoreNormalization"
    use_mask_for_norm: bool = False
    folds: tuple[int, ...] = (0, 1)
    old_plans: bool = False
    features: tuple[int, ...] = (4, 8, 16, 32)
    patch: tuple[int, int, int] = (16, 48, 48)
    spacing: tuple[float, float, float] = (3.0, 0.8, 0.8)  # transposed order (lowres axis first)
    transpose_forward: tuple[int, int, int] = (0, 1, 2)
    num_classes: int = 2
    mirror_axes: tuple[int, ...] = (0, 1, 2)
    logit_gain: float = 8.0  # scales the last layer so random weights give decisive logits
    seed: int = 0
    labels: tuple[str, ...] = ("background", "cord", "lesion")  # the first num_classes are the model's
    configuration: str = "3d_fullres"  # or "2d" (patch and spacing of two axes)
    #: region-based: dataset.json's labels (name -> value or list of values) and regions_class_order
    regions: dict | None = None
    regions_class_order: tuple[int, ...] = ()
    trainer_class: bool = False  # write TRAINER_CLASS_CODE as trainer_class.py (its trainer: TRAINER_CLASS_NAME)
    dataset_name: str | None = None  # default Dataset999_<name>

    @property
    def dims(self) -> int:
        return len(self.patch)


#: SCT 7's lesion_ms_axial_t2 (bavaria-quebec): a 2D nnU-Net on axial slices, region-based (the cord
#: region holds the lesion, SCT's `sc: [1, 2]`), its dataset named so that SCT feeds it AIL
#: (transpose_forward puts the slice axis first), with its own trainer class
LESION_MS_AXIAL_T2 = Variant(name="lesion_ms_axial_t2", configuration="2d", patch=(64, 64), spacing=(0.6, 0.6),
                             features=(8, 16, 32, 64), transpose_forward=(1, 0, 2), mirror_axes=(0, 1), folds=(0, 1),
                             regions={"background": 0, "sc": [1, 2], "lesion": 2}, regions_class_order=(1, 2),
                             trainer_class=True, dataset_name="Dataset101_RegionBasedLesionSegAxialT2", seed=13)

TRAINER_CLASS_NAME = "nnUNetTrainerRecalibrated"
#: a trainer_class.py as SCT's models carry it: a trainer whose network is not the plans' alone
#: (the plans' U-Net and a learnt 1x1 recalibration of its heads), with the fork's signature
TRAINER_CLASS_CODE = f'''import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans


class Recalibrated(torch.nn.Module):
    def __init__(self, net, heads, conv):
        super().__init__()
        self.net = net
        self.recalibrate = conv(heads, heads, 1)

    def forward(self, x):
        return self.recalibrate(self.net(x))


class {TRAINER_CLASS_NAME}(nnUNetTrainer):
    @staticmethod
    def build_network_architecture(architecture_class_name, arch_init_kwargs, arch_init_kwargs_req_import,
                                   num_input_channels, num_output_channels, enable_deep_supervision=True):
        net = get_network_from_plans(architecture_class_name, arch_init_kwargs, arch_init_kwargs_req_import,
                                     num_input_channels, num_output_channels, allow_init=True,
                                     deep_supervision=enable_deep_supervision)
        conv = torch.nn.Conv2d if "Conv2d" in str(arch_init_kwargs["conv_op"]) else torch.nn.Conv3d
        return Recalibrated(net, num_output_channels, conv)


def get_trainer_class():
    return {TRAINER_CLASS_NAME}
'''

#: seg_ms_lesion-like size: 6 stages, 32..320 features, patch 64x128x128, isotropic 1 mm.
REALISTIC = Variant(name="realistic", features=(32, 64, 128, 256, 320, 320), patch=(64, 128, 128),
                    spacing=(1.0, 1.0, 1.0), folds=(0,), seed=7)

#: SCT 7's lesion_ms at the size of bench/cohort.py's nnU-Net case: five folds of the REALISTIC network
LESION_MS_REALISTIC = Variant(name="lesion_ms_realistic", features=REALISTIC.features, patch=REALISTIC.patch,
                              spacing=REALISTIC.spacing, folds=(0, 1, 2, 3, 4), labels=("background", "lesion"), seed=17)

#: SCT 7's lesion_ms: five folds of a binary lesion model (SCT's release: model_fold0..4.zip)
LESION_MS = Variant(name="lesion_ms", folds=(0, 1, 2, 3, 4), labels=("background", "lesion"), seed=11)
#: SCT 7's lesion_ms_mp2rage, served under SCT 7's name only (no model named seg_ms_lesion_mp2rage), so
#: that SCT 6's name reaches it through the alias (the gateway's routes, the CLI)
LESION_MS_MP2RAGE = Variant(name="lesion_ms_mp2rage", folds=(0,), labels=("background", "lesion"), seed=14)
#: SCT 7's spinalcord: the class SCT names `sc` (its output `_seg`), two folds
SPINALCORD = Variant(name="spinalcord", folds=(0, 1), labels=("background", "sc"), seed=12, spacing=(1.0, 1.0, 1.0))

VARIANTS = [
    Variant(name="plain_zscore"),
    Variant(name="resenc_ct", architecture="ResidualEncoderUNet", normalization="CTNormalization",
            transpose_forward=(2, 0, 1), spacing=(1.0, 0.6, 0.6), seed=1),
    Variant(name="plain_zscore_mask_oldplans", use_mask_for_norm=True, old_plans=True, num_classes=3,
            transpose_forward=(0, 2, 1), seed=2),
]


def _strides_and_kernels(v: Variant) -> tuple[list[list[int]], list[list[int]]]:
    n = len(v.features)
    if v.dims == 2:
        return [[1, 1]] + [[2, 2] for _ in range(1, n)], [[3, 3] for _ in range(n)]
    strides = [[1, 1, 1]] + [[1 if (i == 1 and v.spacing[0] / v.spacing[1] > 2) else 2, 2, 2] for i in range(1, n)]
    kernels = [[1 if v.spacing[0] / v.spacing[1] > 2 else 3, 3, 3]] + [[3, 3, 3] for _ in range(1, n)]
    return strides, kernels


def plans_for(v: Variant) -> dict:
    n = len(v.features)
    strides, kernels = _strides_and_kernels(v)
    resampling = {
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
    }
    config = {
        "data_identifier": f"nnUNetPlans_{v.configuration}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": list(v.patch),
        "median_image_size_in_voxels": [20, 120, 120],
        "spacing": list(v.spacing),
        "normalization_schemes": [v.normalization],
        "use_mask_for_norm": [v.use_mask_for_norm],
        **resampling,
        "batch_dice": False,
    }
    if v.old_plans:
        config.update({
            "UNet_class_name": v.architecture,
            "UNet_base_num_features": v.features[0],
            "unet_max_num_features": v.features[-1],
            "n_conv_per_stage_encoder": [2] * n,
            "n_conv_per_stage_decoder": [2] * (n - 1),
            "num_pool_per_axis": [sum(1 for s in strides if s[a] == 2) for a in range(3)],
            "pool_op_kernel_sizes": strides,
            "conv_kernel_sizes": kernels,
        })
    else:
        blocks = "n_conv_per_stage" if v.architecture == "PlainConvUNet" else "n_blocks_per_stage"
        config["architecture"] = {
            "network_class_name": f"dynamic_network_architectures.architectures.unet.{v.architecture}",
            "arch_kwargs": {
                "n_stages": n, "features_per_stage": list(v.features),
                "conv_op": f"torch.nn.modules.conv.Conv{v.dims}d", "kernel_sizes": kernels, "strides": strides,
                blocks: [1, 2, 2, 2][:n] if v.architecture != "PlainConvUNet" else [2] * n,
                "n_conv_per_stage_decoder": [1] * (n - 1),
                "conv_bias": True, "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{v.dims}d",
                "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
            },
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        }
    backward = [list(v.transpose_forward).index(i) for i in range(3)]
    full_spacing = list(v.spacing) if v.dims == 3 else [5.0, *v.spacing]
    return {
        "dataset_name": v.dataset_name or f"Dataset999_{v.name}",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": full_spacing,
        "original_median_shape_after_transp": [20, 120, 120],
        "image_reader_writer": "NibabelIOWithReorient",
        "transpose_forward": list(v.transpose_forward),
        "transpose_backward": backward,
        "configurations": {v.configuration: config},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {"max": 3000.0, "mean": 450.0, "median": 420.0, "min": 0.0, "percentile_00_5": 20.0,
                  "percentile_99_5": 1500.0, "std": 260.0},
        },
    }


def dataset_for(v: Variant) -> dict:
    if v.regions:
        labels = {"labels": dict(v.regions), "regions_class_order": list(v.regions_class_order)}
    else:
        labels = {"labels": {name: value for value, name in enumerate(v.labels[: v.num_classes])}}
    return {"channel_names": {"0": "T2w"}, **labels, "numTraining": 10, "file_ending": ".nii.gz"}


def make_model(root: Path, v: Variant) -> Path:
    """Write the model folder; returns `<root>/<trainer>__nnUNetPlans__<configuration>`."""
    import torch

    from lesionseg.export.nnunet import NnunetFolder, build_network, load_trainer_class, resolve_configuration

    trainer_name = TRAINER_CLASS_NAME if v.trainer_class else TRAINER
    folder = root / f"{trainer_name}__nnUNetPlans__{v.configuration}"
    folder.mkdir(parents=True, exist_ok=True)
    plans, dataset = plans_for(v), dataset_for(v)
    (folder / "plans.json").write_text(json.dumps(plans, indent=1))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=1))
    if v.trainer_class:
        (folder / "trainer_class.py").write_text(TRAINER_CLASS_CODE)
    spec = NnunetFolder(path=folder, plans=plans, dataset=dataset, configuration_name=v.configuration,
                        configuration=resolve_configuration(copy.deepcopy(plans), v.configuration), checkpoints={})
    trainer = load_trainer_class(spec)
    conv = torch.nn.Conv2d if v.dims == 2 else torch.nn.Conv3d
    for fold in v.folds:
        torch.manual_seed(1000 * v.seed + fold)
        net = build_network(spec, trainer)
        with torch.no_grad():
            last = [m for m in net.modules() if isinstance(m, conv)][-1]
            last.weight.mul_(v.logit_gain)
        checkpoint = {
            "network_weights": net.state_dict(),
            "init_args": {"plans": plans, "configuration": v.configuration, "fold": fold, "dataset_json": dataset},
            "trainer_name": trainer_name,
            "inference_allowed_mirroring_axes": list(v.mirror_axes),
        }
        (folder / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save(checkpoint, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder
