"""`lesionseg export nnunet`: an nnU-Net v2 model folder into ONNX networks and Triton entries.

Reads `plans.json`, `dataset.json` and `fold_N/checkpoint_final.pth` (or `checkpoint_best.pth`),
builds the network from the plans (`network_class_name` + `arch_kwargs`, or the old
`UNet_class_name` plans) with deep supervision off, exports ONNX with static patch-size spatial
dims and a dynamic batch dim (one network per fold, or the folds merged into one graph that
averages their logits), checks ONNX against PyTorch on random tiles, and writes the `<task>`
ensemble (preprocess -> predict (BLS sliding window) -> postprocess) whose parameters carry
everything inference needs.

Needs the `export` extra (torch, dynamic-network-architectures).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import logging
import pydoc
import tempfile
from pathlib import Path
from typing import Any, Sequence

from lesionseg.core.errors import ExportError, InputError, ModelNotFoundError, UsageError
from lesionseg.core.files import sha256
from lesionseg.core.paths import user_path
from lesionseg.export.networks import Serving, write_network
from lesionseg.export.nnunet_precision import nnunet_report
from lesionseg.export.parity import ParityReport
from lesionseg.export.precision import ParityOptions
from lesionseg.export.torch_onnx import INPUT_NAME, OUTPUT_NAME, load_checkpoint, to_onnx, torch_module
from lesionseg.server.pipelines.nnunet import NORMALISATIONS, FoldCombination, NnunetPlan
from lesionseg.server.repository.networks import NetworkEntry
from lesionseg.server.repository.nnunet import write_task

logger = logging.getLogger(__name__)

SUPPORTED_ARCHITECTURES = {
    "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
    "dynamic_network_architectures.architectures.residual_unet.ResidualEncoderUNet",
}
OLD_PLAN_CLASSES = {
    "PlainConvUNet": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "ResidualEncoderUNet": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
}
#: older dynamic-network-architectures releases kept ResidualEncoderUNet in `residual_unet`
CLASS_ALIASES = {
    "dynamic_network_architectures.architectures.residual_unet.ResidualEncoderUNet":
        "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
}
CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_best.pth")
#: a model's own trainer code beside plans.json (SCT 7.2+: `load_trainer_class_if_available`)
TRAINER_CLASS_FILE = "trainer_class.py"
#: SCT's orientation rule: dataset.json's `image_orientation`, else AIL for this dataset name, else LPI
REGION_BASED_NAME, REGION_BASED_ORIENTATION = "RegionBasedLesionSeg", "AIL"


@dataclasses.dataclass(frozen=True, kw_only=True)
class NnunetFolder:
    """A trained nnU-Net v2 model folder."""

    path: Path
    plans: dict[str, Any]
    dataset: dict[str, Any]
    configuration_name: str
    configuration: dict[str, Any]
    checkpoints: dict[str, Path]  # fold name -> checkpoint file


def find_model_folder(model_dir: Path) -> Path:
    """The folder holding plans.json, dataset.json and fold_* (the given one or one below it)."""
    if not model_dir.is_dir():
        raise InputError(f"{model_dir}: model folder does not exist")
    if (model_dir / "plans.json").is_file():
        return model_dir
    found = sorted({p.parent for depth in ("*/", "*/*/", "*/*/*/") for p in model_dir.glob(f"{depth}plans.json")})
    found = [f for f in found if any(f.glob("fold_*"))]
    if not found:
        raise ModelNotFoundError(f"{model_dir}: no nnU-Net model folder (plans.json next to fold_*) found")
    if len(found) > 1:
        raise UsageError(f"{model_dir}: several nnU-Net model folders; name one of: {', '.join(str(f) for f in found)}")
    return found[0]


def resolve_configuration(plans: dict[str, Any], name: str) -> dict[str, Any]:
    """A configuration with `inherits_from` resolved and old-style architecture plans converted."""
    configurations = plans.get("configurations", {})
    if name not in configurations:
        raise ExportError(f"plans have no configuration {name!r} (have {', '.join(configurations)})")
    config = copy.deepcopy(configurations[name])
    seen = {name}
    while "inherits_from" in config:
        parent = config.pop("inherits_from")
        if parent in seen or parent not in configurations:
            raise ExportError(f"configuration {name!r} inherits from unknown or circular {parent!r}")
        seen.add(parent)
        config = {**copy.deepcopy(configurations[parent]), **config}
    if "architecture" not in config:
        config["architecture"] = _architecture_from_old_plans(config)
    return config


def _architecture_from_old_plans(config: dict[str, Any]) -> dict[str, Any]:
    """nnU-Net's own conversion of pre-2.4 plans (`UNet_class_name`, ...) into `architecture`."""
    name = config.get("UNet_class_name")
    if name not in OLD_PLAN_CLASSES:
        raise ExportError(f"architecture {name!r} in old-style plans is not supported (PlainConvUNet, ResidualEncoderUNet)")
    n_stages = len(config["n_conv_per_stage_encoder"])
    dim = len(config["patch_size"])
    blocks = "n_conv_per_stage" if name == "PlainConvUNet" else "n_blocks_per_stage"
    return {
        "network_class_name": OLD_PLAN_CLASSES[name],
        "arch_kwargs": {
            "n_stages": n_stages,
            "features_per_stage": [min(config["UNet_base_num_features"] * 2**i, config["unet_max_num_features"]) for i in range(n_stages)],
            "conv_op": f"torch.nn.modules.conv.Conv{dim}d",
            "kernel_sizes": config["conv_kernel_sizes"],
            "strides": config["pool_op_kernel_sizes"],
            blocks: config["n_conv_per_stage_encoder"],
            "n_conv_per_stage_decoder": config["n_conv_per_stage_decoder"],
            "conv_bias": True,
            "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dim}d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def _load_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelNotFoundError(f"{path}: missing") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not readable JSON ({exc})") from None


def load_folder(model_dir: Path, folds: Sequence[str] | None = None, configuration: str | None = None) -> NnunetFolder:
    """Read a model folder; `folds` None means every `fold_*` present. Its `path` is absolute (it
    is recorded with the exported model)."""
    path = user_path(find_model_folder(model_dir))
    plans = _load_json(path / "plans.json")
    dataset = _load_json(path / "dataset.json")
    available = sorted(p.name.removeprefix("fold_") for p in path.glob("fold_*") if p.is_dir())
    wanted = list(folds) if folds else available
    checkpoints: dict[str, Path] = {}
    for fold in wanted:
        folder = path / f"fold_{fold}"
        if not folder.is_dir():
            raise ModelNotFoundError(f"{path}: fold {fold} is missing (have {', '.join(available) or 'none'})")
        ckpt = next((folder / c for c in CHECKPOINTS if (folder / c).is_file()), None)
        if ckpt is None:
            raise ModelNotFoundError(f"{folder}: no {' or '.join(CHECKPOINTS)}")
        checkpoints[fold] = ckpt
    if not checkpoints:
        raise ModelNotFoundError(f"{path}: no fold_* folder")
    if configuration is None:
        configuration = path.name.split("__")[-1] if "__" in path.name else "3d_fullres"
    return NnunetFolder(path=path, plans=plans, dataset=dataset, configuration_name=configuration,
                        configuration=resolve_configuration(plans, configuration), checkpoints=checkpoints)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Labels:
    """A model's outputs as dataset.json declares them.

    `names`: name -> label value (background 0), or for a region-based model name -> its head + 1;
    `heads`: the network's output channels; `regions_class_order`: the value each region's head
    gives a voxel (region-based only); `values`: the label values of each name's mask (region-based
    only, dataset.json's lists: SCT ORs them)."""

    names: dict[str, int]
    heads: int
    regions_class_order: tuple[int, ...] = ()
    values: dict[str, list[int]] = dataclasses.field(default_factory=dict)


def labels_of(dataset: dict[str, Any]) -> Labels:
    """nnU-Net's `LabelManager` rules: a label given as a list of several values makes the model
    region-based (one sigmoid head per non-background label, `regions_class_order` required)."""
    labels = dataset.get("labels") or {}
    if labels.get("background") != 0:
        raise ExportError(f"dataset.json labels must declare background as 0: {labels}")
    if "ignore" in labels:
        raise ExportError("nnU-Net models with an ignore label are not supported")
    if any(isinstance(v, (list, tuple)) and len(v) > 1 for v in labels.values()):
        return _region_labels(labels, dataset.get("regions_class_order"))
    try:
        out = {str(k): int(v[0] if isinstance(v, (list, tuple)) else v) for k, v in labels.items()}
    except (TypeError, ValueError, IndexError):
        raise ExportError(f"dataset.json labels are not name -> integer: {labels}") from None
    if sorted(out.values()) != list(range(len(out))):
        raise ExportError(f"dataset.json labels must be 0..{len(out) - 1}: {labels}")
    return Labels(names=out, heads=len(out))


def _region_labels(labels: dict[str, Any], order: Any) -> Labels:
    try:
        values = {str(k): [int(x) for x in (v if isinstance(v, (list, tuple)) else [v])] for k, v in labels.items() if k != "background"}
    except (TypeError, ValueError):
        raise ExportError(f"dataset.json labels are not name -> integer or list of integers: {labels}") from None
    values = {k: v for k, v in values.items() if set(v) != {0}}  # nnU-Net skips background regions
    if not isinstance(order, list) or len(order) != len(values) or not all(isinstance(o, int) and 0 < o < 256 for o in order):
        raise ExportError(f"a region-based model needs dataset.json regions_class_order: one label value (1-255) per region "
                          f"({', '.join(values)}), not {order!r}")
    return Labels(names={"background": 0, **{name: head + 1 for head, name in enumerate(values)}}, heads=len(values),
                  regions_class_order=tuple(order), values=values)


def input_channels(dataset: dict[str, Any]) -> int:
    return len(dataset.get("channel_names") or dataset.get("modality") or {})


def load_trainer_class(folder: NnunetFolder) -> Any | None:
    """The class `get_trainer_class()` of the model's `trainer_class.py` returns, run as SCT runs
    it (`deepseg/nnunet.py::load_trainer_class_if_available`: the file imported, the function
    called); None without the file or the function. The file is the model's own code: it runs
    here as it runs in SCT (a warning says so; its SHA-256 goes into the export record)."""
    path = folder.path / TRAINER_CLASS_FILE
    if not path.is_file():
        return None
    logger.warning("%s: running the model's own trainer code to build its network, as SCT does", path)
    spec = importlib.util.spec_from_file_location("trainer_class", path)
    if spec is None or spec.loader is None:
        raise ExportError(f"{path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        getter = getattr(module, "get_trainer_class", None)
        return getter() if getter is not None else None
    except ImportError as exc:
        hint = ": pip install 'lesionseg-triton[export]'" if "nnunetv2" in str(exc) else ""
        raise ExportError(f"{path}: cannot import what it needs ({exc}){hint}") from None
    except Exception as exc:  # the model's code: any failure is the file's
        raise ExportError(f"{path}: failed: {type(exc).__name__}: {exc}") from None


def _custom_builder(trainer: Any) -> Any | None:
    """The trainer's own `build_network_architecture`, when a class outside nnunetv2 defines it."""
    for klass in getattr(trainer, "__mro__", ()):
        if "build_network_architecture" in vars(klass):
            return None if klass.__module__.startswith("nnunetv2.") else klass.build_network_architecture
    return None


def build_network(folder: NnunetFolder, trainer: Any | None = None) -> Any:
    """The PyTorch network of the plans, deep supervision off, in eval mode; a `trainer` (from
    `load_trainer_class`) that builds its own architecture builds it, called as SCT's nnU-Net fork
    (nnunetv2-neuropoly 2.6) calls it: (class name, kwargs, kwargs to import, input channels,
    output heads, enable_deep_supervision=False)."""
    arch = folder.configuration["architecture"]
    class_name = arch["network_class_name"]
    heads = labels_of(folder.dataset).heads
    custom = _custom_builder(trainer) if trainer is not None else None
    if custom is not None:
        try:
            network = custom(class_name, copy.deepcopy(arch["arch_kwargs"]), tuple(arch.get("_kw_requires_import", [])),
                             input_channels(folder.dataset), heads, enable_deep_supervision=False)
        except Exception as exc:  # the model's code
            raise ExportError(f"{folder.path / TRAINER_CLASS_FILE}: build_network_architecture failed: "
                              f"{type(exc).__name__}: {exc}") from None
        return network.eval()
    if class_name not in SUPPORTED_ARCHITECTURES:
        raise ExportError(f"architecture {class_name!r} is not supported (PlainConvUNet, ResidualEncoderUNet)")
    try:
        network_class = pydoc.locate(class_name) or pydoc.locate(CLASS_ALIASES.get(class_name, class_name))
    except ImportError:
        network_class = None
    if network_class is None:
        raise ExportError(f"cannot import {class_name}: pip install 'lesionseg-triton[export]'")
    kwargs = copy.deepcopy(arch["arch_kwargs"])
    for key in arch.get("_kw_requires_import", []):
        if kwargs.get(key) is not None:
            located = pydoc.locate(kwargs[key])
            if located is None:
                raise ExportError(f"cannot import {kwargs[key]!r} ({key}) named in the plans")
            kwargs[key] = located
    network = network_class(input_channels=input_channels(folder.dataset), num_classes=heads, deep_supervision=False, **kwargs)
    return network.eval()


class _FoldAverage:
    """Builds a torch module averaging the logits of several fold networks (folds merged)."""

    @staticmethod
    def make(networks: list[Any]) -> Any:
        torch = torch_module()

        class FoldAverage(torch.nn.Module):
            def __init__(self, nets: list[Any]) -> None:
                super().__init__()
                self.nets = torch.nn.ModuleList(nets)

            def forward(self, x: Any) -> Any:
                out = self.nets[0](x)
                for net in self.nets[1:]:
                    out = out + net(x)
                return out / len(self.nets)

        return FoldAverage(networks).eval()


def model_orientation(folder: NnunetFolder) -> str:
    """SCT's orientation for the model (`segment_nnunet`): dataset.json's `image_orientation`, else
    AIL when the dataset's name says RegionBasedLesionSeg (lesion_ms_axial_t2), else LPI."""
    if "image_orientation" in folder.dataset:
        return str(folder.dataset["image_orientation"])
    return REGION_BASED_ORIENTATION if REGION_BASED_NAME in str(folder.plans.get("dataset_name", "")) else "LPI"


def make_plan(folder: NnunetFolder, *, networks: Sequence[str], mirror_axes: Sequence[int], use_mirroring: bool,
              folds: Sequence[str] = (), fold_combination: str = FoldCombination.MEAN) -> NnunetPlan:
    config = folder.configuration
    plans = folder.plans
    channels = input_channels(folder.dataset)
    if channels != 1:
        raise ExportError(f"{folder.path}: {channels}-channel models are not supported yet (one image per request)")
    if len(config["patch_size"]) not in (2, 3) or len(config["spacing"]) != len(config["patch_size"]):
        raise ExportError(f"{folder.path}: only 2D and 3D configurations are supported (patch {config['patch_size']}, "
                          f"spacing {config['spacing']})")
    schemes = tuple(config["normalization_schemes"])
    unknown = [s for s in schemes if s not in NORMALISATIONS]
    if unknown:
        raise ExportError(f"{folder.path}: normalisation {unknown[0]!r} is not supported ({', '.join(NORMALISATIONS)})")
    props = plans.get("foreground_intensity_properties_per_channel") or plans.get("foreground_intensity_properties_by_modality") or {}
    intensity = tuple({k: float(v) for k, v in props.get(str(c), {}).items() if isinstance(v, (int, float))} for c in range(channels))
    if "CTNormalization" in schemes and not all({"mean", "std", "percentile_00_5", "percentile_99_5"} <= set(p) for p in intensity):
        raise ExportError(f"{folder.path}: CTNormalization needs foreground intensity properties in plans.json")

    def kwargs(key: str, default_order: int) -> dict[str, Any]:
        raw = dict(config.get(key) or {})
        return {"order": int(raw.get("order", default_order)), "order_z": int(raw.get("order_z", 0)),
                "force_separate_z": raw.get("force_separate_z")}

    for key in ("resampling_fn_data", "resampling_fn_probabilities"):
        if config.get(key, "resample_data_or_seg_to_shape") != "resample_data_or_seg_to_shape":
            raise ExportError(f"{folder.path}: resampling function {config[key]!r} is not supported")
    labels = labels_of(folder.dataset)
    return NnunetPlan(
        orientation=model_orientation(folder),
        transpose_forward=tuple(int(i) for i in plans.get("transpose_forward", [0, 1, 2])),
        transpose_backward=tuple(int(i) for i in plans.get("transpose_backward", [0, 1, 2])),
        spacing=tuple(float(s) for s in config["spacing"]),
        patch_size=tuple(int(p) for p in config["patch_size"]),
        normalization=schemes,
        use_mask_for_norm=tuple(bool(b) for b in config.get("use_mask_for_norm", [False] * channels)),
        intensity_properties=intensity,
        resampling_data=kwargs("resampling_fn_data_kwargs", 3),
        resampling_probabilities=kwargs("resampling_fn_probabilities_kwargs", 1),
        num_classes=labels.heads,
        labels=labels.names,
        regions_class_order=labels.regions_class_order,
        label_values=labels.values,
        mirror_axes=tuple(int(a) for a in mirror_axes),
        use_mirroring=use_mirroring,
        networks=tuple(networks),
        folds=tuple(folds),
        fold_combination=fold_combination,
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class NnunetExport:
    task: str
    networks: dict[str, dict[str, Any]]
    plan: NnunetPlan
    report: ParityReport | None = None  # of a reduced precision


def export_nnunet(
    model_dir: Path, repository: Path, *, task: str, folds: Sequence[str] | None = None, serving: Serving | None = None,
    mirroring: bool = False, merge_folds: bool = False, configuration: str | None = None, source: str | None = None,
    parity: ParityOptions | None = None, fold_combination: str = FoldCombination.MEAN, crop: dict[str, float] | None = None,
) -> NnunetExport:
    """Export an nnU-Net model folder as the `<task>` ensemble and its networks.

    `fold_combination` (`FoldCombination`): how the folds make one answer; merged folds
    (`merge_folds`, one network averaging the folds' logits) allow only the mean. `crop`: sc-crop's
    padding (mm, `lesionseg.core.interface.CROP_PAD_KEYS`) of a model trained on its cord boxes,
    given to clients in the ensemble's `crop` parameter.

    A reduced `serving.precision` is computed first: the parity report of the task's pipeline with
    every fold network reduced, on the real images of `parity` (`lesionseg.export.nnunet_precision`);
    if it fails, nothing is written and the error gives the failing numbers in one line.
    """
    serving = serving or Serving()
    parity = parity or ParityOptions()
    parity.check(serving.precision)
    if merge_folds and fold_combination != FoldCombination.MEAN:
        raise UsageError(f"folds merged into one network average their logits; they cannot be combined as {fold_combination!r}")
    folder = load_folder(model_dir, folds, configuration)
    labels = labels_of(folder.dataset)
    trainer = load_trainer_class(folder)
    network = build_network(folder, trainer)
    patch = tuple(folder.configuration["patch_size"])
    channels = input_channels(folder.dataset)
    fold_modules, mirror_axes = {}, None
    for fold, ckpt in folder.checkpoints.items():
        checkpoint = load_checkpoint(ckpt)
        if "network_weights" not in checkpoint:
            raise InputError(f"{ckpt}: not an nnU-Net checkpoint (no network_weights)")
        net = copy.deepcopy(network)
        try:
            net.load_state_dict(checkpoint["network_weights"])
        except RuntimeError as exc:
            raise ExportError(f"{ckpt}: weights do not fit the plans' network ({str(exc).splitlines()[0]})") from None
        fold_modules[fold] = net.eval()
        if mirror_axes is None:
            mirror_axes = tuple(checkpoint.get("inference_allowed_mirroring_axes") or ())
    modules = {f"{task}_net": _FoldAverage.make(list(fold_modules.values()))} if merge_folds else \
        {f"{task}_fold{fold}_net": module for fold, module in fold_modules.items()}
    records: dict[str, dict[str, Any]] = {}
    models: dict[str, Any] = {}
    for name, module in modules.items():
        models[name], diff = to_onnx(module, patch, channels)
        records[name] = {"source": str(folder.path), "folds": list(folder.checkpoints) if merge_folds else [name.split("_fold")[-1][:-4]],
                         "checkpoints": {f: sha256(p) for f, p in folder.checkpoints.items()},
                         **({"trainer_class": sha256(folder.path / TRAINER_CLASS_FILE)} if trainer is not None else {}),
                         "parity": {"reference": "pytorch", "compared": "logits on 3 random tiles", "max_abs_diff": diff}}
    try:
        plan = make_plan(folder, networks=list(modules), mirror_axes=mirror_axes or (), use_mirroring=mirroring,
                         folds=() if merge_folds else list(fold_modules), fold_combination=fold_combination)
    except ValueError as exc:
        raise ExportError(f"{folder.path}: {exc}") from None
    report, candidates = None, {}
    if serving.precision != "fp32":
        with tempfile.TemporaryDirectory(prefix="lesionseg-parity-") as tmp:
            report, candidates = nnunet_report(plan, models, serving.precision, parity, Path(tmp),
                                               input_name=INPUT_NAME, output_name=OUTPUT_NAME)
        if not report.passed:
            raise ExportError(f"{folder.path}: not written: {task}: {report.failure_line()}")
    for name in modules:
        entry = NetworkEntry(name=name, input_name=INPUT_NAME, output_names=(OUTPUT_NAME,), input_dims=(channels, *patch),
                             output_dims=(labels.heads, *patch), max_batch_size=8, queue_delay_us=5000)
        model = candidates[name].model if name in candidates else models[name]
        write_network(entry, model, repository, serving=serving, record=records[name], report=report)
    write_task(repository, task, plan, source=source or str(folder.path), crop=crop)
    return NnunetExport(task=task, networks=records, plan=plan, report=report)
