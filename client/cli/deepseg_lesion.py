"""`lesionseg deepseg-lesion`: SCT's `sct_deepseg_lesion` (legacy t2 / t2_ax / t2s models) on Triton."""

from __future__ import annotations

import argparse
from pathlib import Path

from lesionseg.client.cli.parsers import command
from lesionseg.client.cli.segmentation import BATCH_HELP, add_common_arguments, refuse_batch_only_options, segment_cohort
from lesionseg.client.cli.segmentation import check_output_folders, segment_one, transport_settings, writer
from lesionseg.core.catalogue import LEGACY_CONTRASTS
from lesionseg.core.errors import EXIT_OK, UsageError

HELP = """\
examples:
  lesionseg deepseg-lesion -i t2s.nii.gz -c t2s
  lesionseg deepseg-lesion -i t2.nii.gz -c t2_ax -ofolder out/ -url triton:8001
  lesionseg deepseg-lesion -i dicom/t2s_series/ -c t2s --output-format dicom -ofolder out/   # DICOM SEG + SR
  lesionseg deepseg-lesion -i t2s.nii.gz -c t2s -centerline file -file_centerline t2s_centerline.nii.gz
  lesionseg deepseg-lesion -i sub-01/anat/sub-01_T2star.nii.gz -c t2s -qc qc/   # then open qc/index.html
  lesionseg deepseg-lesion -i bids/ --bids suffix=T2star -c t2s -ofolder derivatives/lesionseg -j 4 --resume
  lesionseg deepseg-lesion -i bids/ -c t2s -centerline file -file_centerline bids -ofolder derivatives/lesionseg
  lesionseg deepseg-lesion -i 'cohort/*/t2s.nii.gz' -c t2s -centerline file -file_centerline '{folder}/{stem}_seg.nii.gz'

outputs (SCT's names), in -ofolder:
  <in>_lesionseg.nii.gz      binary lesion mask, uint8, input geometry and orientation
  <in>_RPI_seg.nii.gz        soft lesion map in RPI orientation on the input grid (>= 0.1 gives the mask)
  <in>_res_RPI_seg.nii.gz    soft lesion map on the 0.5 mm in-plane RPI grid

centerline files of a batch: -file_centerline is a pattern naming each subject's file, with
  {folder} (the image's folder), {stem} (its name without .nii/.nii.gz), {dataset} (its BIDS
  dataset or scanned folder) and {relative} (its folder in the dataset, e.g. sub-01/anat);
  'bids' means {dataset}/derivatives/labels/{relative}/{stem}_seg.nii.gz (cord segmentations).
  A subject whose file is missing fails with a message naming it; the others go on.

With no server at -url, the embedded server is started for this run.
exit codes: 0 ok, 1 failure, 2 usage, 3 server unavailable
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = command(sub, "deepseg-lesion", help="MS lesion segmentation with SCT's legacy models (sct_deepseg_lesion)",
                     epilog=HELP + "\n" + BATCH_HELP)
    parser.add_argument("-i", "--input", required=True, nargs="+", metavar="IMG",
                        help="input NIfTI image(s), folder(s), quoted glob pattern(s) or BIDS dataset(s); or one DICOM MR series "
                             "(a folder of its instances, or a multi-frame file)")
    parser.add_argument("-c", "--contrast", required=True, choices=LEGACY_CONTRASTS, help="image contrast")
    parser.add_argument("-ofolder", "--ofolder", type=Path, default=Path("."), metavar="DIR", help="output folder (default: .)")
    parser.add_argument("-centerline", "--centerline", choices=("cnn", "file"), default="cnn",
                        help="centerline from the CNN (default) or from -file_centerline")
    parser.add_argument("-file_centerline", "--file-centerline", metavar="F",
                        help="centerline or cord mask (with -centerline file); in a batch, a pattern (see below)")
    add_common_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from lesionseg.client.batch.inputs import is_batch
    from lesionseg.client.subject_files import check_pattern, is_pattern
    from lesionseg.client.cli.progress import step
    from lesionseg.client.legacy import LegacyJob
    from lesionseg.client.servers import open_servers

    if args.centerline == "file" and args.file_centerline is None:
        raise UsageError("-centerline file needs -file_centerline F")
    if args.centerline == "cnn" and args.file_centerline is not None:
        raise UsageError("-file_centerline goes with -centerline file")
    if args.file_centerline is not None and is_pattern(args.file_centerline):
        check_pattern(args.file_centerline, option="-file_centerline")
    writer(args)  # refuses bad output options before anything starts
    batch = is_batch(args.input, args.bids)
    refuse_batch_only_options(args, batch=batch)
    check_output_folders(args)
    if batch and args.file_centerline is not None and not is_pattern(args.file_centerline):
        raise UsageError("-file_centerline names one file, which belongs to one image: in a batch give a pattern "
                         "such as '{folder}/{stem}_seg.nii.gz' or 'bids' (see --help)")
    with open_servers(args.url, transport_settings(args)) as servers:
        job = LegacyJob(servers=servers, contrast=args.contrast, centerline=args.file_centerline)
        if batch:
            return segment_cohort(args, job, servers, ofolder=args.ofolder)
        image = Path(args.input[0])
        with step(f"segmenting lesions in {image.name} ({args.contrast})", quiet=args.quiet):
            written = segment_one(args, job, image, folder=args.ofolder)
    for path in written:
        print(path)
    return EXIT_OK
