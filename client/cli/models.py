"""`lesionseg models install`: SCT's released models into the model repository."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lesionseg.core.errors import EXIT_OK
from lesionseg.core.catalogue import TASKS, release_url

HELP = """\
examples:
  lesionseg models install sct-legacy                         # SCT's release zips (internet)
  lesionseg models install seg_ms_lesion                      # the nnU-Net task from its release URL
  lesionseg models install seg_ms_lesion_mp2rage --from model_seg_ms_mp2rage.zip
  lesionseg models install sct-legacy --from ../shared/sct_models
  lesionseg models install sct-legacy --from 20220325_deepseg_lesion_models_onnx.zip
  lesionseg models install sct-legacy --from sct              # an SCT install at $SCT_DIR
  lesionseg models install seg_sc_contrast_agnostic --release v2.5   # SCT 6.5's MONAI checkpoint
  lesionseg models install seg_ms_lesion_mp2rage --release r20230210 # SCT 6.0-6.3's ivadomed ensemble

Downloads are cached in ~/.cache/lesionseg/downloads and verified (zip integrity, expected
files, checksum recorded on first download); LESIONSEG_RELEASES_URL points at a mirror.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("models", help="install released models into the repository",
                            epilog="examples:\n  lesionseg models install sct-legacy\n  lesionseg models install seg_ms_lesion\n"
                                   "  lesionseg models install seg_ms_lesion_mp2rage --release r20230210\n",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    actions.required = True
    install = actions.add_parser("install", help="fetch, verify and export models", epilog=HELP,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    install.add_argument("family", choices=("sct-legacy", *TASKS), help="sct-legacy, or an sct_deepseg task")
    install.add_argument("--from", dest="source", metavar="SRC", help="URL, zip, folder, or 'sct' ($SCT_DIR); default: SCT's release URLs")
    install.add_argument("--repository", type=Path, metavar="REPO", help="target repository (default: env LESIONSEG_REPOSITORY or ~/.cache/lesionseg/model_repository)")
    install.add_argument("--contrast", default="all", choices=("t2", "t2_ax", "t2s", "all"))
    install.add_argument("--backend", default="python", choices=("python", "onnxruntime"))
    install.add_argument("--folds", default="all", metavar="all|0,1", help="nnU-Net tasks: folds to use")
    install.add_argument("--target", default="cpu", choices=("cpu", "gpu"), help="nnU-Net tasks: serving target")
    install.add_argument("--release", metavar="NAME", help="a task's other release (e.g. seg_sc_contrast_agnostic v2.5, the MONAI model)")
    install.set_defaults(run=run_install)


def run_install(args: argparse.Namespace) -> int:
    from lesionseg.core.settings import setting
    from lesionseg.export.install import resolve_source
    from lesionseg.export.legacy import export_sct_legacy
    from lesionseg.server.launch.embedded import default_repository

    def progress(done: int, total: int | None) -> None:
        if sys.stderr.isatty():
            text = f"{done / 1e6:.1f} MB" + (f" of {total / 1e6:.1f} MB" if total else "")
            print(f"\r  downloading {text}", end="", file=sys.stderr, flush=True)

    repository = Path(setting("REPOSITORY", args.repository, default_repository()))
    if args.family != "sct-legacy":
        return install_task(args, repository, progress)
    folder = resolve_source(args.source, progress=progress)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    result = export_sct_legacy(folder, repository, contrast=args.contrast, backend=args.backend)
    print(f"installed {', '.join(f'deepseg_lesion_{c}' for c in result.contrasts)} into {repository} (from {folder})")
    for contrast in result.skipped:
        print(f"skipped contrast {contrast}: its models are not in {folder}")
    return EXIT_OK


def install_task(args: argparse.Namespace, repository: Path, progress) -> int:
    """An sct_deepseg task: its release zip (or --from), verified, exported as the task ensemble."""
    from lesionseg.export.install import fetch_release, resolve_source, task_release
    from lesionseg.export.nnunet import export_nnunet

    task = TASKS[args.family]
    if args.source is None:
        url = release_url(task, args.release)
        members = ("plans.json", "dataset.json") if url == task.url else ()
        urls = url if isinstance(url, tuple) else (url,)
        folders = [fetch_release(task_release(u, members), progress=progress) for u in urls]
        folder, source = folders[0], " ".join(urls)
    else:
        folders = [resolve_source(args.source, progress=progress)]
        folder, source = folders[0], args.source
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if any(next(f.rglob("*.onnx"), None) for f in folders) and not any(folder.rglob("plans.json")):  # SCT 6.0-6.3's ivadomed models
        from lesionseg.export.ivadomed import export_ivadomed

        ivadomed = export_ivadomed(folders, repository, task=task.name, target=args.target, source=source)
        print(f"installed {ivadomed.task} ({len(ivadomed.members)} ivadomed members) into {repository} (from {source})")
        return EXIT_OK
    if any(folder.rglob("*.ckpt")) and not any(folder.rglob("plans.json")):  # SCT 6.5's MONAI model
        from lesionseg.export.monai import export_monai

        monai = export_monai(folder, repository, task=task.name, target=args.target, source=source)
        print(f"installed {monai.task} ({monai.plan.network}, MONAI checkpoint) into {repository} (from {source})")
        return EXIT_OK
    folds = None if args.folds == "all" else [f.strip() for f in args.folds.split(",") if f.strip()]
    result = export_nnunet(folder, repository, task=task.name, folds=folds, target=args.target, source=source)
    print(f"installed {result.task} ({', '.join(result.plan.networks)}) into {repository} (from {source})")
    return EXIT_OK
