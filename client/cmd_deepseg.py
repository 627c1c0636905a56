"""`lesionseg deepseg`: SCT's `sct_deepseg -task ...` (nnU-Net models) on Triton."""

from __future__ import annotations

import argparse
from pathlib import Path

from lesionseg.client.errors import EXIT_OK
from lesionseg.client.tasks import TASKS

HELP = """\
examples:
  lesionseg deepseg -i sub-01_T2w.nii.gz -task seg_ms_lesion
  lesionseg deepseg -i sub-01_UNIT1.nii.gz -task seg_ms_lesion_mp2rage --crop-to-cord
  lesionseg deepseg -i t2.nii.gz -task seg_sc_contrast_agnostic -o t2_cord.nii.gz -largest 1 -fill-holes
  lesionseg deepseg -i t2.nii.gz -task seg_ms_lesion -thr 0.5 -remove-small 5mm3

Writes <in><suffix>.nii.gz (SCT's suffix for the task: _lesion_seg or _seg; one file per class
for multi-class models) and a JSON sidecar (GeneratedBy: command, version, model source). The
orientation the model expects comes from the server.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("deepseg", help="segment with an nnU-Net task (sct_deepseg -task)", epilog=HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", "--input", required=True, type=Path, metavar="IMG", help="input NIfTI image")
    parser.add_argument("-task", "--task", required=True, metavar="TASK",
                        help=f"task ({', '.join(TASKS)}, or any exported task name)")
    parser.add_argument("-o", "--output", type=Path, metavar="OUT", help="output file (default: SCT's name next to the input)")
    parser.add_argument("-url", "--url", help="Triton gRPC address HOST:PORT (env LESIONSEG_URL; default 127.0.0.1:8001)")
    parser.add_argument("-thr", "--thr", type=float, metavar="T", help="binarise the class probability (> T, T in [0, 1]) instead of argmax")
    parser.add_argument("-largest", "--largest", type=int, metavar="N", help="keep the N largest connected components")
    parser.add_argument("-fill-holes", "--fill-holes", action="store_true", help="fill holes in the mask")
    parser.add_argument("-remove-small", "--remove-small", metavar="N[mm3|vox]", help="remove objects smaller than N voxels or mm3")
    parser.add_argument("--crop-to-cord", action="store_true",
                        help="segment the cord first (seg_sc_contrast_agnostic), crop 30 mm L-R and A-P and 5 mm S-I around it, segment, paste back")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from lesionseg.client.deepseg_client import PostOptions, segment_task
    from lesionseg.client.postprocessing import parse_size

    options = PostOptions(threshold=args.thr, largest=args.largest, fill_holes=args.fill_holes,
                          remove_small=parse_size(args.remove_small) if args.remove_small else None)
    if args.crop_to_cord:
        from lesionseg.client.crop_workflow import segment_cropped_to_cord

        result = segment_cropped_to_cord(args.input, args.task, output=args.output, url=args.url, options=options)
    else:
        result = segment_task(args.input, args.task, output=args.output, url=args.url, options=options)
    for path in result.files.values():
        print(path)
    return EXIT_OK
