"""argparse as every lesionseg command uses it: one-line usage errors under exit code 2, and help
epilogs (examples, exit codes) kept as written."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lesionseg.core.catalogue import LEGACY_CONTRASTS
from lesionseg.core.enums import Backend, Precision, Runtime, Target, choices
from lesionseg.core.errors import EXIT_USAGE


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors under our exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def command(sub: argparse._SubParsersAction, name: str, *, help: str, epilog: str = "") -> argparse.ArgumentParser:
    """A (sub)command's parser, its epilog printed as written."""
    return sub.add_parser(name, help=help, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)


def subcommands(parser: argparse.ArgumentParser, *, dest: str, metavar: str) -> argparse._SubParsersAction:
    """The required subcommands of `parser` (e.g. `models install`, `export nnunet`)."""
    actions = parser.add_subparsers(dest=dest, metavar=metavar, parser_class=Parser)
    actions.required = True
    return actions


def repository_arguments(parser: argparse.ArgumentParser, *, target: bool = False) -> None:
    """--repository (and the serving options: --target, --backend, --precision, --engine-cache) as
    every export kind and `models install` take them; `serving(args)` turns them into `Serving`."""
    parser.add_argument("--repository", type=Path, metavar="REPO",
                        help="target repository (default: env LESIONSEG_REPOSITORY or ~/.cache/lesionseg/model_repository)")
    if target:
        group = parser.add_argument_group("serving")
        closed_sets = (
            ("--target", Target.CPU, "cpu: config.pbtxt only; gpu: also configs/gpu.pbtxt, the networks on Triton's "
             "onnxruntime backend on the GPU with TensorRT (tritonserver --model-config-name=gpu)"),
            ("--backend", Backend.PYTHON, "backend of the CPU config.pbtxt: python (embedded server, default) or Triton's "
             "own onnxruntime / openvino (NGC images)"),
            ("--runtime", Runtime.AUTO, "--backend python: run the networks with ONNX Runtime or OpenVINO; auto (default): "
             "each network's measured choice (bench/README.md)"),
            ("--precision", Precision.FP32, "network precision (default fp32): bf16 / int8 on the CPU, fp16 for --target gpu "
             "(TensorRT); a reduced one is written only with a passing parity report on --parity-data"),
        )
        for option, default, text in closed_sets:
            group.add_argument(option, default=default, choices=choices(type(default)), help=text)
        group.add_argument("--parity-data", type=Path, metavar="DIR",
                           help="folder of real NIfTI images the parity report of a reduced --precision runs on "
                                "(env LESIONSEG_PARITY_DATA)")
        group.add_argument("--calibration-data", type=Path, metavar="DIR",
                           help="--precision int8: images whose network inputs calibrate it (default: --parity-data)")
        group.add_argument("--engine-cache", default="/engine-cache", metavar="DIR",
                           help="--target gpu: TensorRT engine cache path in the serving container (default /engine-cache)")


def serving(args: argparse.Namespace):
    """The `lesionseg.export.networks.Serving` of --target/--backend/--runtime/--precision/--engine-cache."""
    from lesionseg.export.networks import Serving
    from lesionseg.server.repository.gpu import GpuOptions

    return Serving(target=args.target, backend=args.backend, runtime=args.runtime, precision=args.precision,
                   gpu=GpuOptions(precision=Precision.FP16 if args.precision == Precision.FP16 else Precision.FP32,
                                  engine_cache=args.engine_cache))


def parity_options(args: argparse.Namespace):
    """The `lesionseg.export.precision.ParityOptions` of --parity-data / --calibration-data
    (argument > env LESIONSEG_PARITY_DATA)."""
    from lesionseg.export.precision import ParityOptions

    env = os.environ.get("LESIONSEG_PARITY_DATA")
    return ParityOptions(parity_data=args.parity_data or (Path(env) if env else None), calibration_data=args.calibration_data)


def parse_folds(text: str) -> list[str] | None:
    """--folds: "all" (None: every fold_* present) or "0,1"."""
    if text == "all":
        return None
    folds = [f.strip() for f in text.split(",") if f.strip()]
    if not folds:
        raise argparse.ArgumentTypeError(f"{text!r} is not all or a comma-separated list of folds")
    return folds


def contrast_argument(parser: argparse.ArgumentParser) -> None:
    """--contrast of the legacy pipelines to export or install (default all)."""
    parser.add_argument("--contrast", default="all", choices=(*LEGACY_CONTRASTS, "all"), help="which pipeline(s) (default all present)")
