"""`lesionseg deepseg-lesion`: SCT's `sct_deepseg_lesion` (legacy t2 / t2_ax / t2s models) on Triton."""

from __future__ import annotations

import argparse
from pathlib import Path

from lesionseg.client.errors import EXIT_OK, UsageError

CONTRASTS = ("t2", "t2_ax", "t2s")

HELP = """\
examples:
  lesionseg deepseg-lesion -i t2s.nii.gz -c t2s
  lesionseg deepseg-lesion -i t2.nii.gz -c t2_ax -ofolder out/ -url triton:8001
  lesionseg deepseg-lesion -i t2s.nii.gz -c t2s -centerline file -file_centerline t2s_centerline.nii.gz
  lesionseg deepseg-lesion -i sub-01/anat/sub-01_T2star.nii.gz -c t2s -qc qc/   # then open qc/index.html

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
        epilog=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-i", "--input", required=True, type=Path, metavar="IMG", help="input NIfTI image")
    parser.add_argument("-c", "--contrast", required=True, choices=CONTRASTS, help="image contrast")
    parser.add_argument("-ofolder", "--ofolder", type=Path, default=Path("."), metavar="DIR", help="output folder (default: .)")
    parser.add_argument("-centerline", "--centerline", choices=("cnn", "file"), default="cnn",
                        help="centerline from the CNN (default) or from -file_centerline")
    parser.add_argument("-file_centerline", "--file-centerline", type=Path, metavar="F", help="centerline mask (with -centerline file)")
    parser.add_argument("-qc", "--qc", type=Path, metavar="DIR", help="write a QC report entry into DIR (SCT layout, index.html)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files (default: refuse, exit 2)")
    parser.add_argument("-url", "--url", help="Triton gRPC address HOST:PORT (env LESIONSEG_URL; default 127.0.0.1:8001)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from lesionseg.client.lesion_client import segment_legacy

    if args.centerline == "file" and args.file_centerline is None:
        raise UsageError("-centerline file needs -file_centerline F")
    if args.centerline == "cnn" and args.file_centerline is not None:
        raise UsageError("-file_centerline goes with -centerline file")
    from lesionseg.client.progress import step

    with step(f"segmenting lesions in {args.input.name} ({args.contrast})", quiet=args.quiet):
        result = segment_legacy(args.input, args.contrast, ofolder=args.ofolder, url=args.url, centerline_file=args.file_centerline,
                                qc=args.qc, overwrite=args.overwrite)
    for path in result.files.values():
        print(path)
    return EXIT_OK
