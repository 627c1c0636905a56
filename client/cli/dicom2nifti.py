"""`lesionseg dicom2nifti`: a DICOM MR series as NIfTI, on the grid the segmentation commands use."""

from __future__ import annotations

import argparse
from pathlib import Path

from lesionseg.client.cli.parsers import command
from lesionseg.core.errors import EXIT_OK, UsageError

HELP = """\
examples:
  lesionseg dicom2nifti -i dicom/series_7/                       # writes dicom/series_7.nii.gz (+ .json)
  lesionseg dicom2nifti -i scan/IM_0001.dcm -o t2s.nii.gz        # a multi-frame (Enhanced MR) file
  lesionseg dicom2nifti -i a.dcm b.dcm c.dcm -o t2.nii.gz        # the instances of one series

Slices are sorted along the slice normal; a missing slice, duplicate positions, mixed series,
orientations, sizes or pixel spacings are refused with one line naming the series. The affine is
RAS+ (nibabel's convention); values are rescaled (RescaleSlope/Intercept). JSON sidecar: series
identity and source files.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = command(sub, "dicom2nifti", help="convert one DICOM MR series to NIfTI", epilog=HELP)
    parser.add_argument("-i", "--input", required=True, nargs="+", type=Path, metavar="DICOM",
                        help="a series folder, a multi-frame file, or the instance files of one series")
    parser.add_argument("-o", "--output", type=Path, metavar="OUT.nii.gz", help="output file (default: <folder>.nii.gz beside it)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files (default: refuse, exit 2)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from lesionseg.client.dicom.convert import dicom_to_nifti

    if len(args.input) > 1 and args.output is None:
        raise UsageError("several instance files: name the output with -o")
    if args.output is not None and not args.output.name.endswith((".nii", ".nii.gz")):
        raise UsageError(f"{args.output}: output must end in .nii or .nii.gz")
    source = args.input[0] if len(args.input) == 1 else args.input
    print(dicom_to_nifti(source, args.output, overwrite=args.overwrite))
    return EXIT_OK
