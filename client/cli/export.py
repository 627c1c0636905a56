"""`lesionseg export`: turn checkpoints into ONNX networks and Triton repository entries."""

from __future__ import annotations

import argparse
from pathlib import Path

from lesionseg.client.cli.parsers import (
    command,
    contrast_argument,
    parity_options,
    parse_folds,
    repository_arguments,
    serving,
    subcommands,
)
from lesionseg.core import paths
from lesionseg.core.errors import EXIT_OK

HELP = """\
examples:
  lesionseg export sct-legacy --models-dir ../shared/sct_models --repository model_repository
  lesionseg export sct-legacy --models-dir ~/sct/data --repository repo --contrast t2s --backend onnxruntime
  lesionseg export sct-legacy --models-dir ../shared/sct_models --repository repo --precision bf16 \
      --parity-data ../shared/sct_testing_data
  lesionseg export sct-legacy --models-dir ../shared/sct_models --repository repo --target gpu --precision fp16 \
      --parity-data ../shared/sct_testing_data

--backend python (default) serves the ONNX networks from Python-backend models with onnxruntime,
as the embedded server needs; --backend onnxruntime writes configs for Triton's own ONNX Runtime
backend (NGC images). --target gpu adds configs/gpu.pbtxt beside each network's config.pbtxt:
Triton's onnxruntime backend on the GPU with the TensorRT accelerator, which a server started with
--model-config-name=gpu uses while the Python pre/post-processing stays on the CPU.

--precision bf16 (OpenVINO BF16) or int8 (a quantized graph calibrated on the real images of
--calibration-data, default --parity-data) reduces each lesion network on the CPU; fp16 the GPU
variant's (TensorRT). A reduced network is written only with a passing parity report on every
image of --parity-data (Dice vs FP32 >= 0.99, the same lesion count, total volume within 2 %),
stored as <network>/parity.json; a failing one writes nothing and exits 1 with its numbers.
"""


def _kind(kinds: argparse._SubParsersAction, name: str, *, help: str, epilog: str, source: tuple[str, str, str],
          task: str | None, run) -> argparse.ArgumentParser:
    """One export kind: its source argument (flag, metavar, help), --task (`task` its default,
    None: required), --repository and --target."""
    parser = command(kinds, name, help=help, epilog=epilog)
    flag, metavar, text = source
    parser.add_argument(flag, required=True, type=Path, metavar=metavar, help=text)
    parser.add_argument("--task", required=task is None, default=task, metavar="NAME",
                        help="Triton name of the task" + (f" (default {task})" if task else ", e.g. lesion_ms"))
    repository_arguments(parser, target=True)
    parser.set_defaults(run=run)
    return parser


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = command(sub, "export", help="convert models into a Triton model repository",
                     epilog="examples:\n  lesionseg export sct-legacy --models-dir ../shared/sct_models --contrast all\n"
                            "  lesionseg export nnunet --model-dir Dataset101/ --task lesion_ms\n")
    kinds = subcommands(parser, dest="kind", metavar="KIND")
    legacy = command(kinds, "sct-legacy", help="SCT's legacy deepseg_lesion / deepseg_sc centerline models (.h5 or .onnx)", epilog=HELP)
    legacy.add_argument("--models-dir", required=True, type=Path, metavar="DIR", help="folder holding *_lesion / *_ctr .h5 or .onnx files")
    repository_arguments(legacy, target=True)
    contrast_argument(legacy)
    legacy.add_argument("--golden", type=Path, metavar="DIR", help="Keras golden outputs <model>.npz for parity (default: <models-dir>/golden)")
    legacy.set_defaults(run=run_legacy)
    nnunet = _kind(kinds, "nnunet", help="an nnU-Net v2 model folder (plans.json, dataset.json, fold_N/checkpoint_final.pth)",
                   epilog=NNUNET_HELP, source=("--model-dir", "DIR", "the model folder (or a folder above it)"), task=None,
                   run=run_nnunet)
    nnunet.add_argument("--folds", default=None, type=parse_folds, metavar="all|0,1", help="folds to use (default: every fold_* present)")
    nnunet.add_argument("--mirroring", action="store_true", help="test-time mirroring over the checkpoint's allowed axes (SCT: off)")
    nnunet.add_argument("--merge-folds", action="store_true", help="one ONNX graph averaging every fold instead of one network per fold")
    nnunet.add_argument("--configuration", metavar="NAME", help="plans configuration (default: from the folder name, else 3d_fullres)")
    nnunet.add_argument("--fold-combination", choices=("mean", "sct_fork", "vote"), default="mean",
                        help="how the folds make one answer: nnU-Net's mean of the logits (default), SCT's nnU-Net fork "
                             "(the first fold counted twice), or SCT 7's lesion_ms vote of the folds' label maps")
    _kind(kinds, "monai", help="SCT 6.5's contrast-agnostic MONAI checkpoint (.ckpt, PlainConvUNet)",
          epilog="example:\n  lesionseg export monai --ckpt model_contrast-agnostic_20240930-1002/ --task spinalcord\n",
          source=("--ckpt", "PATH", "the .ckpt file or a folder holding one"), task="spinalcord", run=run_monai)
    _kind(kinds, "ivadomed", help="an ivadomed model or ensemble (NAME/NAME.onnx + NAME.json per member; SCT 6.0-6.3 MP2RAGE lesions)",
          epilog="example:\n  lesionseg export ivadomed --model-dir model_seg_ms_lesion_mp2rage/ --task lesion_ms_mp2rage\n",
          source=("--model-dir", "DIR", "a member folder, or a folder holding several (seed1/NAME/, ...)"),
          task="lesion_ms_mp2rage", run=run_ivadomed)
    engines = command(kinds, "tensorrt", help="TensorRT engines for the repository's GPU networks (trtexec, on the serving GPU)",
                      epilog=TENSORRT_HELP)
    repository_arguments(engines)
    engines.add_argument("--network", action="append", metavar="NAME", help="only this network (repeatable; default: every GPU network)")
    engines.add_argument("--precision", choices=("fp32", "fp16"), help="default: the precision of each network's configs/gpu.pbtxt")
    engines.add_argument("--trtexec", metavar="PATH", help="trtexec to use (default: env LESIONSEG_TRTEXEC, PATH, /usr/src/tensorrt/bin)")
    engines.set_defaults(run=run_tensorrt)


TENSORRT_HELP = """\
examples:
  lesionseg models install sct-legacy --repository /models --target gpu --precision fp16
  lesionseg export tensorrt --repository /models
  tritonserver --model-repository=/models --model-config-name=tensorrt

Builds 1/model.plan for every network with a configs/gpu.pbtxt and writes configs/tensorrt.pbtxt
(platform tensorrt_plan) beside it. Engines are tied to the GPU model and the TensorRT version:
build them on the node type that serves them (the Helm chart does it at pod start).
"""


def run_tensorrt(args: argparse.Namespace) -> int:
    from lesionseg.export.tensorrt import build_engines

    repository = paths.repository(args.repository)
    for engine in build_engines(repository, networks=args.network, precision=args.precision, trtexec=args.trtexec):
        version = f"TensorRT {engine.tensorrt_version}" if engine.tensorrt_version else "TensorRT version not reported"
        print(f"{engine.network}: {engine.precision} engine {engine.plan} in {engine.seconds:.0f} s ({version})")
    return EXIT_OK


NNUNET_HELP = """\
examples:
  lesionseg export nnunet --model-dir model_seg_ms_lesion/ --task lesion_ms --fold-combination vote
  lesionseg export nnunet --model-dir mp2rage/ --task lesion_ms_mp2rage --folds 3 --target gpu
"""


def run_nnunet(args: argparse.Namespace) -> int:
    from lesionseg.export.install import crop_padding
    from lesionseg.export.nnunet import export_nnunet

    repository = paths.repository(args.repository)
    crop = crop_padding(args.model_dir, required=False) if args.model_dir.is_dir() else None  # sc-crop's, as SCT reads it
    result = export_nnunet(args.model_dir, repository, task=args.task, folds=args.folds, serving=serving(args),
                           mirroring=args.mirroring, merge_folds=args.merge_folds, configuration=args.configuration,
                           parity=parity_options(args), fold_combination=args.fold_combination, crop=crop)
    for name, record in result.networks.items():
        print(f"{name}: ONNX vs PyTorch max abs logits difference {record['parity']['max_abs_diff']:.2g} on random tiles")
        if result.report is not None:
            print(f"{name}: {result.report.summary()} ({repository / name / 'parity.json'})")
    print(f"task {result.task} written to {repository} (patch {list(result.plan.patch_size)}, spacing "
          f"{list(result.plan.spacing)}, orientation {result.plan.orientation}, labels {result.plan.labels}, folds combined: "
          f"{result.plan.fold_combination}{', on sc-crop cord boxes' if crop else ''})")
    return EXIT_OK


def run_monai(args: argparse.Namespace) -> int:
    from lesionseg.export.monai import export_monai

    repository = paths.repository(args.repository)
    result = export_monai(args.ckpt, repository, task=args.task, serving=serving(args))
    print(f"{result.plan.network}: {result.record['stages']} stages, features {result.record['features']}; ONNX vs PyTorch "
          f"max abs difference {result.record['parity']['max_abs_diff']:.2g} on random windows")
    print(f"task {result.task} written to {repository}")
    return EXIT_OK


def run_ivadomed(args: argparse.Namespace) -> int:
    from lesionseg.export.ivadomed import export_ivadomed

    repository = paths.repository(args.repository)
    result = export_ivadomed(args.model_dir, repository, task=args.task, serving=serving(args))
    print(f"task {result.task} written to {repository}: {len(result.members)} members, patches {list(result.plan.members[0].length)}")
    return EXIT_OK


def run_legacy(args: argparse.Namespace) -> int:
    from lesionseg.core.catalogue import legacy_model
    from lesionseg.export.legacy import export_sct_legacy
    from lesionseg.export.precision import REPORT_NAME
    from lesionseg.server.repository.legacy import network_model

    repository = paths.repository(args.repository)
    result = export_sct_legacy(args.models_dir, repository, contrast=args.contrast, serving=serving(args), golden_dir=args.golden,
                               parity=parity_options(args))
    for network, record in result.networks.items():
        parity = record.get("parity")
        measured = (f"max abs {parity['compared']} difference {parity['max_abs_diff']:.2g} vs Keras golden outputs"
                    if parity else "parity not measured (no golden outputs)")
        print(f"{network}: {record['source_format']} -> {repository}; {measured}")
    for network, report in result.reports.items():
        print(f"{network}: {report.summary()} ({repository / network_model(network) / REPORT_NAME})")
    for contrast in result.contrasts:
        print(f"pipeline {legacy_model(contrast)} written")
    for contrast in result.skipped:
        print(f"skipped contrast {contrast}: its models are not in {args.models_dir}")
    return EXIT_OK
