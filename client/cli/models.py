"""`lesionseg models install`: SCT's released models into the model repository."""

from __future__ import annotations

import argparse
import sys

from lesionseg.client.cli.parsers import command, contrast_argument, parity_options, parse_folds, repository_arguments, serving, subcommands
from lesionseg.core.catalogue import ALIASES, TASKS, canonical
from lesionseg.core.errors import EXIT_OK, UsageError

HELP = """\
examples:
  lesionseg models install sct-legacy                         # SCT's release zips (internet)
  lesionseg models install lesion_ms                          # SCT 7: five fold zips, cropped (needs sc-crop)
  lesionseg models install sc-crop                            # sc-crop v0.0.11's detector and classifier
  lesionseg models install lesion_ms --release r20250909      # SCT 7.3's lesion_ms (whole image)
  lesionseg models install lesion_ms --from sct               # the model of the SCT 7 install at $SCT_DIR
  lesionseg models install lesion_ms_mp2rage --from model_seg_ms_mp2rage.zip
  lesionseg models install sct-legacy --from ../shared/sct_models
  lesionseg models install sct-legacy --from 20220325_deepseg_lesion_models_onnx.zip
  lesionseg models install sct-legacy --from sct              # an SCT install at $SCT_DIR
  lesionseg models install spinalcord --release v2.5         # SCT 6.5's MONAI checkpoint
  lesionseg models install lesion_ms_mp2rage --release r20230210     # SCT 6.0-6.3's ivadomed ensemble

Downloads are cached in ~/.cache/lesionseg/downloads and verified (zip integrity, expected
files, checksum recorded on first download); LESIONSEG_RELEASES_URL points at a mirror.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = command(sub, "models", help="install released models into the repository",
                     epilog="examples:\n  lesionseg models install sct-legacy\n  lesionseg models install lesion_ms\n"
                            "  lesionseg models install lesion_ms_mp2rage --release r20230210\n")
    install = command(subcommands(parser, dest="action", metavar="ACTION"), "install", help="fetch, verify and export models",
                      epilog=HELP)
    install.add_argument("family", choices=("sct-legacy", "sc-crop", *TASKS, *ALIASES),
                         help="sct-legacy, sc-crop (the cord detector of SCT 7's cropped tasks), or an sct_deepseg task "
                              "(SCT 6's names install SCT 7's task)")
    install.add_argument("--from", dest="source", metavar="SRC", help="URL, zip, folder, or 'sct' ($SCT_DIR); default: SCT's release URLs")
    repository_arguments(install, target=True)
    contrast_argument(install)
    install.add_argument("--folds", default=None, type=parse_folds, metavar="all|0,1", help="nnU-Net tasks: folds to use (default all)")
    install.add_argument("--release", metavar="NAME", help="a task's other release (e.g. spinalcord v2.5, the MONAI model)")
    install.set_defaults(run=run_install)


def run_install(args: argparse.Namespace) -> int:
    from lesionseg.core import paths
    from lesionseg.export.install import Installed, install_legacy, install_task

    name, note = canonical(args.family)
    if note:
        print(note, file=sys.stderr)

    shown = sys.stderr.isatty()

    def progress(done: int, total: int | None) -> None:
        if shown:
            text = f"{done / 1e6:.1f} MB" + (f" of {total / 1e6:.1f} MB" if total else "")
            print(f"\r  downloading {text}", end="", file=sys.stderr, flush=True)

    repository = paths.repository(args.repository)
    try:
        if args.family == "sc-crop":
            from lesionseg.export.sccrop import install_sccrop

            if args.folds is not None or args.release is not None:
                raise UsageError("sc-crop has one release (v0.0.11) and no folds: --release and --folds do not apply")
            done = install_sccrop(args.source, repository, serving=serving(args), progress=progress)
            released = "" if done.released else " (not the released weights: their checksums differ)"
            installed = Installed(models=("sccrop",), description=f"sccrop, sccrop_detector, sccrop_classifier{released}",
                                  source=done.source)
        elif args.family == "sct-legacy":
            installed = install_legacy(args.source, repository, contrast=args.contrast, serving=serving(args),
                                       progress=progress, parity=parity_options(args))
        else:
            installed = install_task(name, repository, release=args.release, source=args.source,
                                     folds=args.folds, serving=serving(args), progress=progress, parity=parity_options(args))
    finally:
        if shown:
            print(file=sys.stderr)
    print(f"installed {installed.description} into {repository} (from {installed.source})")
    for contrast in installed.skipped:
        print(f"skipped contrast {contrast}: its models are not in {installed.source}")
    return EXIT_OK
