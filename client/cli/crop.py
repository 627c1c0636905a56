"""`lesionseg crop`: SCT's `sct_crop_image -i IMG -m MASK -dilate AxBxC`."""

from __future__ import annotations

import argparse
from pathlib import Path

from lesionseg.client.cli.parsers import command
from lesionseg.core.errors import EXIT_OK

HELP = """\
examples:
  lesionseg crop -i t2.nii.gz -m t2_seg.nii.gz -dilate 30x30x5            # voxels, like SCT
  lesionseg crop -i t2.nii.gz -m t2_seg.nii.gz -dilate 15x15x10 -dilate-unit mm -o t2_box.nii.gz

The box is the mask's bounding box per array axis, widened on each side and clipped to the image;
the output keeps world positions (its affine is shifted). Default output: <in>_crop.nii.gz.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = command(sub, "crop", help="crop an image around a mask (sct_crop_image -m -dilate)", epilog=HELP)
    parser.add_argument("-i", "--input", required=True, type=Path, metavar="IMG")
    parser.add_argument("-m", "--mask", required=True, type=Path, metavar="MASK", help="mask on the image's grid")
    parser.add_argument("-dilate", "--dilate", default="0x0x0", metavar="AxBxC", help="widening per side along the array axes (default 0x0x0)")
    parser.add_argument("-dilate-unit", "--dilate-unit", default="vox", choices=("vox", "mm"), help="unit of -dilate (default vox, as SCT)")
    parser.add_argument("-o", "--output", type=Path, metavar="OUT")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file (default: refuse, exit 2)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from lesionseg.client.crop import crop_image, parse_dilation
    from lesionseg.core.files import refuse_inputs

    refuse_inputs([args.output], [args.input, args.mask])

    print(crop_image(args.input, args.mask, parse_dilation(args.dilate), unit=args.dilate_unit, output=args.output,
                     overwrite=args.overwrite))
    return EXIT_OK
