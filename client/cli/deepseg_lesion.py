"""`lesionseg deepseg-lesion`: SCT's `sct_deepseg_lesion` (legacy t2 / t2_ax / t2s models) on Triton."""

from __future__ import annotations

import argparse
from pathlib import Path

from lesionseg.client.cli.batch_options import (
    BATCH_HELP,
    add_batch_arguments,
    add_transport_arguments,
    run_cohort,
    subject_folder,
    transport_settings,
)
from lesionseg.core.errors import EXIT_OK, UsageError

CONTRASTS = ("t2", "t2_ax", "t2s")

HELP = """\
examples:
  lesionseg deepseg-lesion -i t2s.nii.gz -c t2s
  lesionseg deepseg-lesion -i t2.nii.gz -c t2_ax -ofolder out/ -url triton:8001
  lesionseg deepseg-lesion -i t2s.nii.gz -c t2s -centerline file -file_centerline t2s_centerline.nii.gz
  lesionseg deepseg-lesion -i sub-01/anat/sub-01_T2star.nii.gz -c t2s -qc qc/   # then open qc/index.html
  lesionseg deepseg-lesion -i bids/ --bids suffix=T2star -c t2s -ofolder derivatives/lesionseg -j 4 --resume

outputs (SCT's names), in -ofolder:
  <in>_lesionseg.nii.gz      binary lesion mask, uint8, input geometry and orientation
  <in>_RPI_seg.nii.gz        soft lesion map in RPI orientation on the input grid (>= 0.1 gives the mask)
  <in>_res_RPI_seg.nii.gz    soft lesion map on the 0.5 mm in-plane RPI grid

With no server at -url, the embedded server is started for this run.
exit codes: 0 ok, 1 failure, 2 usage, 3 server unavailable
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "deepseg-lesion", help="MS lesion segmentation with SCT's legacy models (sct_deepseg_lesion)",
        epilog=HELP + "\n" + BATCH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-i", "--input", required=True, nargs="+", metavar="IMG",
                        help="input NIfTI image(s), folder(s), quoted glob pattern(s) or BIDS dataset(s)")
    parser.add_argument("-c", "--contrast", required=True, choices=CONTRASTS, help="image contrast")
    parser.add_argument("-ofolder", "--ofolder", type=Path, default=Path("."), metavar="DIR", help="output folder (default: .)")
    parser.add_argument("-centerline", "--centerline", choices=("cnn", "file"), default="cnn",
                        help="centerline from the CNN (default) or from -file_centerline")
    parser.add_argument("-file_centerline", "--file-centerline", type=Path, metavar="F", help="centerline mask (with -centerline file)")
    parser.add_argument("-qc", "--qc", type=Path, metavar="DIR", help="write a QC report entry into DIR (SCT layout, index.html)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files (default: refuse, exit 2)")
    parser.add_argument("-url", "--url", help="Triton gRPC address HOST:PORT (env LESIONSEG_URL; default 127.0.0.1:8001)")
    add_transport_arguments(parser)
    add_batch_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from lesionseg.client.batch.inputs import is_batch
    from lesionseg.client.legacy import segment_legacy

    if args.centerline == "file" and args.file_centerline is None:
        raise UsageError("-centerline file needs -file_centerline F")
    if args.centerline == "cnn" and args.file_centerline is not None:
        raise UsageError("-file_centerline goes with -centerline file")
    if is_batch(args.input, args.bids):
        if args.file_centerline is not None:
            raise UsageError("-file_centerline belongs to one image; run those images one at a time")
        return _run_batch(args)
    from lesionseg.client.cli.progress import step
    from lesionseg.client.session import open_transport

    image = Path(args.input[0])
    with open_transport(args.url, settings=transport_settings(args)) as link, \
            step(f"segmenting lesions in {image.name} ({args.contrast})", quiet=args.quiet):
        result = segment_legacy(image, args.contrast, ofolder=args.ofolder, url=None, centerline_file=args.file_centerline,
                                qc=args.qc, overwrite=args.overwrite, transport=link)
    for path in result.files.values():
        print(path)
    return EXIT_OK


def _run_batch(args: argparse.Namespace) -> int:
    from lesionseg.client.batch.runner import Subject
    from lesionseg.client.legacy import legacy_outputs, segment_legacy
    from lesionseg.client.lesion_stats import sidecar_paths

    model = f"deepseg_lesion_{args.contrast}"

    def plan(link, image) -> Subject:
        link.parameters(model)  # the model must be served before anything starts
        files = legacy_outputs(image.path, subject_folder(args.ofolder, image))
        return Subject(image=image, grid_outputs=(files["lesionseg"], files["rpi_seg"]),
                       other_outputs=(files["res_rpi_seg"], *sidecar_paths(files["lesionseg"])))

    def work(link, subject: Subject) -> str:
        # existing outputs were refused, or accepted with --resume/--overwrite, before the batch started
        result = segment_legacy(subject.image.path, args.contrast, ofolder=subject_folder(args.ofolder, subject.image),
                                url=None, qc=args.qc, overwrite=True, transport=link)
        return f"{result.lesions} lesions, {result.lesion_volume_mm3:.1f} mm3"

    return run_cohort(args, model=model, plan=plan, work=work, what=f"deepseg-lesion {args.contrast}")
