"""`lesionseg deepseg`: SCT's `sct_deepseg -task ...` (nnU-Net models) on Triton."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lesionseg.client.errors import EXIT_OK
from lesionseg.client.tasks import TASKS

logger = logging.getLogger(__name__)

HELP = """\
examples:
  lesionseg deepseg -i sub-01_T2w.nii.gz -task seg_ms_lesion
  lesionseg deepseg -i sub-01_UNIT1.nii.gz -task seg_ms_lesion_mp2rage --crop-to-cord
  lesionseg deepseg -i t2.nii.gz -task seg_sc_contrast_agnostic -o t2_cord.nii.gz -largest 1 -fill-holes
  lesionseg deepseg -i t2.nii.gz -task seg_ms_lesion -thr 0.5 -remove-small 5mm3

Writes <in><suffix>.nii.gz (SCT's suffix for the task: _lesion_seg or _seg; one file per class
for multi-class models) and a JSON sidecar (GeneratedBy: command, version, model source); for
lesion masks also <mask>_lesions.tsv/.json (count, per-lesion volume in mm3 and extent). The
orientation the model expects comes from the server. Existing outputs are kept unless --overwrite.
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
    parser.add_argument("-qc", "--qc", type=Path, metavar="DIR", help="write a QC report entry into DIR (SCT layout, index.html)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files (default: refuse, exit 2)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from lesionseg.client.deepseg_client import PostOptions, segment_task
    from lesionseg.client.postprocessing import parse_size

    options = PostOptions(threshold=args.thr, largest=args.largest, fill_holes=args.fill_holes,
                          remove_small=parse_size(args.remove_small) if args.remove_small else None)
    from lesionseg.client.progress import step

    if args.crop_to_cord:
        from lesionseg.client.crop_workflow import segment_cropped_to_cord

        with step(f"segmenting {args.input.name} ({args.task}, cropped to the cord)", quiet=args.quiet):
            result = segment_cropped_to_cord(args.input, args.task, output=args.output, url=args.url, options=options,
                                             overwrite=args.overwrite)
    else:
        with step(f"segmenting {args.input.name} ({args.task})", quiet=args.quiet):
            result = segment_task(args.input, args.task, output=args.output, url=args.url, options=options, overwrite=args.overwrite)
    for path in result.files.values():
        print(path)
    cord, lesion = split_outputs(args.task, result.files)
    if lesion is not None:
        from lesionseg.client.lesion_stats import write_mask_sidecars

        tsv, _, stats = write_mask_sidecars(lesion)
        print(tsv)
        logger.info("%s: %d lesions, %.1f mm3", lesion, stats.count, stats.total_volume_mm3)
    if args.qc is not None:
        from lesionseg.client.cmd_qc import write_mask_qc

        print(write_mask_qc(args.input, cord, args.qc, lesion_path=lesion, command="deepseg", contrast=args.task))
    return EXIT_OK


def split_outputs(task: str, files: dict[str, Path]) -> tuple[Path | None, Path | None]:
    """(cord mask, lesion mask) among a task's outputs, by class name (one class: by SCT's suffix)."""
    from lesionseg.client.tasks import task_info

    if len(files) == 1:
        ((name, path),) = files.items()
        return (None, path) if "lesion" in name or "lesion" in task_info(task).suffix else (path, None)
    lesion = next((p for name, p in files.items() if "lesion" in name), None)
    cord = next((p for name, p in files.items() if "lesion" not in name and ("cord" in name or name == "sc")), None)
    return cord, lesion
