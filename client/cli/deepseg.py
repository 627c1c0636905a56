"""`lesionseg deepseg`: SCT's `sct_deepseg TASK -i ...` (SCT 7; `-task TASK` as in SCT 6 still
works) with nnU-Net, MONAI and ivadomed models on Triton."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lesionseg.client.cli.parsers import command
from lesionseg.client.cli.segmentation import BATCH_HELP, add_common_arguments, refuse_batch_only_options, segment_cohort
from lesionseg.client.cli.segmentation import check_output_folders, segment_one, transport_settings, writer
from lesionseg.core.catalogue import TASKS
from lesionseg.core.errors import EXIT_OK, UsageError

HELP = """\
examples:
  lesionseg deepseg lesion_ms -i sub-01_T2w.nii.gz                     # SCT 7
  lesionseg deepseg lesion_ms -i sub-01_T2w.nii.gz -single-fold -test-time-aug
  lesionseg deepseg lesion_ms -i sub-01_T2w.nii.gz -soft-ms-lesion      # writes sub-01_T2w_msLesionSoft.nii.gz
  lesionseg deepseg lesion_ms -i t2.nii.gz -box-zmin 10 -box-zmax 200   # the detected box, two faces replaced
  lesionseg deepseg -i sub-01_T2w.nii.gz -task seg_ms_lesion            # SCT 6's form and name
  lesionseg deepseg lesion_ms_mp2rage -i sub-01_UNIT1.nii.gz --crop-to-cord
  lesionseg deepseg spinalcord -i t2.nii.gz -o t2_cord.nii.gz -largest 1 -fill-holes
  lesionseg deepseg lesion_ms -i t2.nii.gz -thr 0.5 -remove-small 5mm3
  lesionseg deepseg lesion_ms -i dicom/series_7/ --output-format both   # NIfTI + DICOM SEG and SR
  lesionseg deepseg lesion_ms -i data/ --bids suffix=T2w -ofolder derivatives/lesionseg -j 4
  lesionseg deepseg lesion_ms -i 'cohort/*/t2s.nii.gz' --resume --summary summary.tsv

Writes <in><suffix>.nii.gz (SCT's suffix for the task: _lesion_seg or _seg; one file per class
for multi-class models) and a JSON sidecar (GeneratedBy: command, version, model source); for
lesion masks also <mask>_lesions.tsv/.json (count, per-lesion volume in mm3 and extent). The
orientation the model expects comes from the server. Existing outputs are kept unless --overwrite.
SCT 6's task names (seg_ms_lesion, seg_ms_lesion_mp2rage, seg_sc_contrast_agnostic) run SCT 7's
task with a one-line note, unless the server serves a model under the old name itself.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = command(sub, "deepseg", help="segment with a deep-learning task (sct_deepseg TASK)", epilog=HELP + "\n" + BATCH_HELP)
    parser.add_argument("task", nargs="?", metavar="TASK",
                        help=f"task, first as in SCT 7's sct_deepseg ({', '.join(TASKS)}, or any exported task name)")
    parser.add_argument("-i", "--input", required=True, nargs="+", metavar="IMG",
                        help="input NIfTI image(s), folder(s), quoted glob pattern(s) or BIDS dataset(s); or one DICOM MR series "
                             "(a folder of its instances, or a multi-frame file)")
    parser.add_argument("-task", "--task", dest="task_option", metavar="TASK", help="the task, as SCT 6's -task (same as TASK)")
    parser.add_argument("-o", "--output", type=Path, metavar="OUT", help="output file, one input only (default: SCT's name next to the input)")
    parser.add_argument("-ofolder", "--ofolder", type=Path, metavar="DIR", help="output folder (default: next to each input)")
    parser.add_argument("-thr", "--thr", type=float, metavar="T", help="binarise the class probability (> T, T in [0, 1]) instead of argmax")
    parser.add_argument("-largest", "--largest", type=int, metavar="N", help="keep the N largest connected components")
    parser.add_argument("-fill-holes", "--fill-holes", action="store_true", help="fill holes in the mask")
    parser.add_argument("-remove-small", "--remove-small", metavar="N[mm3|vox]", help="remove objects smaller than N voxels or mm3")
    parser.add_argument("-test-time-aug", "--test-time-aug", action="store_true",
                        help="nnU-Net's test-time augmentation (mirroring on every allowed axis; slower)")
    parser.add_argument("-single-fold", "--single-fold", action="store_true",
                        help="one fold of an ensemble (fold 1, as SCT), not all: faster")
    parser.add_argument("-soft-ms-lesion", "--soft-ms-lesion", action="store_true",
                        help="write the soft lesion map <in>_msLesionSoft.nii.gz instead of the mask (lesion_ms)")
    for face in ("xmin", "xmax", "ymin", "ymax", "zmin", "zmax"):
        parser.add_argument(f"-box-{face}", f"--box-{face}", dest=f"box_{face}", type=int, metavar="VOX",
                            help=argparse.SUPPRESS if face != "xmin" else
                            "-box-xmin ... -box-zmax: the crop box's faces (voxel indices of the input as stored, inclusive) "
                            "for a task that runs on sc-crop's cord box; the faces given replace the detected ones")
    parser.add_argument("--crop-to-cord", action="store_true",
                        help="segment the cord first (spinalcord, or seg_sc_contrast_agnostic where served so), crop 30 mm L-R and A-P and 5 mm S-I around it, segment, paste back")
    add_common_arguments(parser)
    parser.set_defaults(run=run)


def chosen_task(positional: str | None, option: str | None) -> str:
    """The task named first (SCT 7) or with -task (SCT 6); both only when they agree."""
    if positional and option and positional != option:
        raise UsageError(f"two tasks given: {positional} and -task {option}")
    task = positional or option
    if not task:
        raise UsageError(f"no task: lesionseg deepseg TASK -i IMAGE (tasks: {', '.join(TASKS)})")
    return task


def run(args: argparse.Namespace) -> int:
    from lesionseg.client.batch.inputs import is_batch
    from lesionseg.client.cli.progress import step
    from lesionseg.client.postprocessing import parse_size
    from lesionseg.client.servers import open_servers
    from lesionseg.client.task import PostOptions, TaskJob, served_task

    options = PostOptions(threshold=args.thr, largest=args.largest, fill_holes=args.fill_holes,
                          remove_small=parse_size(args.remove_small) if args.remove_small else None)
    args.task = chosen_task(args.task, args.task_option)
    writer(args)  # refuses bad output options before anything starts
    batch = is_batch(args.input, args.bids)
    refuse_batch_only_options(args, batch=batch)
    check_output_folders(args)
    with open_servers(args.url, transport_settings(args)) as servers:
        args.task, note = served_task(servers, args.task)
        if note:
            print(note, file=sys.stderr)
        job = TaskJob(servers=servers, task=args.task, options=options, crop_to_cord=args.crop_to_cord,
                      test_time_aug=args.test_time_aug, single_fold=args.single_fold, soft_lesion=args.soft_ms_lesion,
                      box={face: getattr(args, f"box_{face}") for face in ("xmin", "xmax", "ymin", "ymax", "zmin", "zmax")})
        if batch:
            return segment_cohort(args, job, servers, ofolder=args.ofolder)
        image = Path(args.input[0])
        with step(f"segmenting {image.name} ({args.task}{', cropped to the cord' if args.crop_to_cord else ''})", quiet=args.quiet):
            written = segment_one(args, job, image, folder=args.ofolder, output=args.output)
    for path in written:
        print(path)
    return EXIT_OK
