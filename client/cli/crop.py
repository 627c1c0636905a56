"""`lesionseg crop`: SCT's `sct_crop_image -i IMG -m MASK -dilate AxBxC`."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lesionseg.core.errors import EXIT_OK, InputError

HELP = """\
examples:
  lesionseg crop -i t2.nii.gz -m t2_seg.nii.gz -dilate 30x30x5            # voxels, like SCT
  lesionseg crop -i t2.nii.gz -m t2_seg.nii.gz -dilate 15x15x10 -dilate-unit mm -o t2_box.nii.gz

The box is the mask's bounding box per array axis, widened on each side and clipped to the image;
the output keeps world positions (its affine is shifted). Default output: <in>_crop.nii.gz.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("crop", help="crop an image around a mask (sct_crop_image -m -dilate)", epilog=HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", "--input", required=True, type=Path, metavar="IMG")
    parser.add_argument("-m", "--mask", required=True, type=Path, metavar="MASK", help="mask on the image's grid")
    parser.add_argument("-dilate", "--dilate", default="0x0x0", metavar="AxBxC", help="widening per side along the array axes (default 0x0x0)")
    parser.add_argument("-dilate-unit", "--dilate-unit", default="vox", choices=("vox", "mm"), help="unit of -dilate (default vox, as SCT)")
    parser.add_argument("-o", "--output", type=Path, metavar="OUT")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file (default: refuse, exit 2)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from lesionseg.client.crop import cropped_affine, dilation_voxels, mask_box, parse_dilation
    from lesionseg.client.nifti import load_volume, refuse_existing, save_volume, stem

    dilation = parse_dilation(args.dilate)
    image = load_volume(args.input)
    mask = load_volume(args.mask, what="mask", allow_empty=True)
    if mask.data.shape != image.data.shape or not np.allclose(mask.affine, image.affine, atol=1e-3):
        raise InputError(f"{args.mask}: mask is not on the grid of {args.input} (shape {mask.data.shape} vs {image.data.shape})")
    try:
        box = mask_box(mask.data, dilation_voxels(dilation, args.dilate_unit, image.spacing))
    except InputError as exc:
        raise InputError(f"{args.mask}: {exc}") from None
    output = args.output or args.input.parent / f"{stem(args.input)}_crop.nii.gz"
    refuse_existing([output], overwrite=args.overwrite)
    raw = np.asanyarray(__import__("nibabel").load(str(args.input)).dataobj)
    raw = raw.reshape(image.data.shape)
    save_volume(np.ascontiguousarray(raw[box.slices]), cropped_affine(image.affine, box), output, like=image.header)
    print(output)
    return EXIT_OK
