"""`lesionseg export`: turn checkpoints into ONNX networks and Triton repository entries."""

from __future__ import annotations

import argparse
from pathlib import Path

from lesionseg.client.errors import EXIT_OK

HELP = """\
examples:
  lesionseg export sct-legacy --models-dir ../shared/sct_models --repository model_repository
  lesionseg export sct-legacy --models-dir ~/sct/data --repository repo --contrast t2s --backend onnxruntime

--backend python (default) serves the ONNX networks from Python-backend models with onnxruntime,
as the embedded server needs; --backend onnxruntime writes configs for Triton's own ONNX Runtime
backend (NGC images, GPU).
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("export", help="convert models into a Triton model repository")
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", parser_class=type(parser))
    kinds.required = True
    legacy = kinds.add_parser(
        "sct-legacy", help="SCT's legacy deepseg_lesion / deepseg_sc centerline models (.h5 or .onnx)",
        epilog=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    legacy.add_argument("--models-dir", required=True, type=Path, metavar="DIR", help="folder holding *_lesion / *_ctr .h5 or .onnx files")
    legacy.add_argument("--repository", type=Path, metavar="REPO", help="target repository (default: env LESIONSEG_REPOSITORY or ~/.cache/lesionseg/model_repository)")
    legacy.add_argument("--contrast", default="all", choices=("t2", "t2_ax", "t2s", "all"), help="which pipeline(s) (default all present)")
    legacy.add_argument("--backend", default="python", choices=("python", "onnxruntime"), help="how the networks are served")
    legacy.add_argument("--golden", type=Path, metavar="DIR", help="Keras golden outputs <model>.npz for parity (default: <models-dir>/golden)")
    legacy.set_defaults(run=run_legacy)


def run_legacy(args: argparse.Namespace) -> int:
    from lesionseg.client.settings import setting
    from lesionseg.export.sct_legacy import export_sct_legacy
    from lesionseg.server.embedded import default_repository

    repository = Path(setting("REPOSITORY", args.repository, default_repository()))
    result = export_sct_legacy(args.models_dir, repository, contrast=args.contrast, backend=args.backend, golden_dir=args.golden)
    for network, record in result.networks.items():
        parity = record.get("parity")
        measured = (f"max abs {parity['compared']} difference {parity['max_abs_diff']:.2g} vs Keras golden outputs"
                    if parity else "parity not measured (no golden outputs)")
        print(f"{network}: {record['source_format']} -> {repository}; {measured}")
    for contrast in result.contrasts:
        print(f"pipeline deepseg_lesion_{contrast} written")
    for contrast in result.skipped:
        print(f"skipped contrast {contrast}: its models are not in {args.models_dir}")
    return EXIT_OK
