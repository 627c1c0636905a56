"""`lesionseg deepseg`: SCT's `sct_deepseg -task ...` (nnU-Net models) on Triton."""

from __future__ import annotations

import argparse
import logging
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
from lesionseg.core.catalogue import TASKS

logger = logging.getLogger(__name__)

HELP = """\
examples:
  lesionseg deepseg -i sub-01_T2w.nii.gz -task seg_ms_lesion
  lesionseg deepseg -i sub-01_UNIT1.nii.gz -task seg_ms_lesion_mp2rage --crop-to-cord
  lesionseg deepseg -i t2.nii.gz -task seg_sc_contrast_agnostic -o t2_cord.nii.gz -largest 1 -fill-holes
  lesionseg deepseg -i t2.nii.gz -task seg_ms_lesion -thr 0.5 -remove-small 5mm3
  lesionseg deepseg -i data/ --bids suffix=T2w -task seg_ms_lesion -ofolder derivatives/lesionseg -j 4
  lesionseg deepseg -i 'cohort/*/t2s.nii.gz' -task seg_ms_lesion --resume --summary summary.tsv

Writes <in><suffix>.nii.gz (SCT's suffix for the task: _lesion_seg or _seg; one file per class
for multi-class models) and a JSON sidecar (GeneratedBy: command, version, model source); for
lesion masks also <mask>_lesions.tsv/.json (count, per-lesion volume in mm3 and extent). The
orientation the model expects comes from the server. Existing outputs are kept unless --overwrite.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("deepseg", help="segment with an nnU-Net task (sct_deepseg -task)", epilog=HELP + "\n" + BATCH_HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", "--input", required=True, nargs="+", metavar="IMG",
                        help="input NIfTI image(s), folder(s), quoted glob pattern(s) or BIDS dataset(s)")
    parser.add_argument("-task", "--task", required=True, metavar="TASK",
                        help=f"task ({', '.join(TASKS)}, or any exported task name)")
    parser.add_argument("-o", "--output", type=Path, metavar="OUT", help="output file, one input only (default: SCT's name next to the input)")
    parser.add_argument("-ofolder", "--ofolder", type=Path, metavar="DIR", help="output folder (default: next to each input)")
    parser.add_argument("-url", "--url", help="Triton gRPC address HOST:PORT (env LESIONSEG_URL; default 127.0.0.1:8001)")
    parser.add_argument("-thr", "--thr", type=float, metavar="T", help="binarise the class probability (> T, T in [0, 1]) instead of argmax")
    parser.add_argument("-largest", "--largest", type=int, metavar="N", help="keep the N largest connected components")
    parser.add_argument("-fill-holes", "--fill-holes", action="store_true", help="fill holes in the mask")
    parser.add_argument("-remove-small", "--remove-small", metavar="N[mm3|vox]", help="remove objects smaller than N voxels or mm3")
    parser.add_argument("--crop-to-cord", action="store_true",
                        help="segment the cord first (seg_sc_contrast_agnostic), crop 30 mm L-R and A-P and 5 mm S-I around it, segment, paste back")
    parser.add_argument("-qc", "--qc", type=Path, metavar="DIR", help="write a QC report entry into DIR (SCT layout, index.html)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files (default: refuse, exit 2)")
    add_transport_arguments(parser)
    add_batch_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from lesionseg.client.task import PostOptions
    from lesionseg.client.batch.inputs import is_batch
    from lesionseg.client.postprocessing import parse_size

    options = PostOptions(threshold=args.thr, largest=args.largest, fill_holes=args.fill_holes,
                          remove_small=parse_size(args.remove_small) if args.remove_small else None)
    if is_batch(args.input, args.bids):
        if args.output is not None:
            raise UsageError("-o names one output file; with several inputs use -ofolder")
        return _run_batch(args, options)
    from lesionseg.client.cli.progress import step
    from lesionseg.client.session import open_transport

    (image,) = args.input
    image = Path(image)
    with open_transport(args.url, settings=transport_settings(args)) as link, \
            step(f"segmenting {image.name} ({args.task}{', cropped to the cord' if args.crop_to_cord else ''})", quiet=args.quiet):
        files, extra, _ = segment_one(args, options, link, image, output=args.output, ofolder=args.ofolder,
                                     overwrite=args.overwrite)
    for path in [*files.values(), *extra]:
        print(path)
    return EXIT_OK


def segment_one(args: argparse.Namespace, options, link, image: Path, *, output: Path | None, ofolder: Path | None,
                overwrite: bool) -> tuple[dict[str, Path], list[Path], str]:
    """Segment `image`, write masks, sidecars, lesion statistics and (with -qc) the QC entry.
    Returns (masks by class, other files written, a one-line note)."""
    from lesionseg.client.task import segment_task

    if args.crop_to_cord:
        from lesionseg.client.crop_to_cord import segment_cropped_to_cord

        result = segment_cropped_to_cord(image, args.task, output=output, options=options, overwrite=overwrite,
                                         transport=link, ofolder=ofolder)
    else:
        result = segment_task(image, args.task, output=output, options=options, overwrite=overwrite, transport=link,
                              ofolder=ofolder)
    extra: list[Path] = []
    note = ", ".join(f"{name}: {_foreground_voxels(m)} vox" for name, m in result.masks.items())
    cord, lesion = split_outputs(args.task, result.files)
    if lesion is not None:
        from lesionseg.client.lesion_stats import write_mask_sidecars

        tsv, _, stats = write_mask_sidecars(lesion)
        extra.append(tsv)
        note = f"{stats.count} lesions, {stats.total_volume_mm3:.1f} mm3"
        logger.info("%s: %s", lesion, note)
    if args.qc is not None:
        from lesionseg.client.cli.qc import write_mask_qc

        extra.append(write_mask_qc(image, cord, args.qc, lesion_path=lesion, command="deepseg", contrast=args.task))
    return result.files, extra, note


def _foreground_voxels(mask) -> int:
    """Voxels in a written mask: ones of a binary mask, >= the lesion statistics' soft threshold of a soft map."""
    from lesionseg.client.lesion_stats import SOFT_THRESHOLD

    return int((mask >= SOFT_THRESHOLD).sum()) if mask.dtype.kind == "f" else int((mask > 0).sum())


def _run_batch(args: argparse.Namespace, options) -> int:
    import json

    from lesionseg.client.batch.runner import Subject
    from lesionseg.client.task import output_paths
    from lesionseg.client.lesion_stats import sidecar_paths
    from lesionseg.client.nifti import stem

    def plan(link, image) -> Subject:
        labels = json.loads(link.parameters(args.task).get("plan", "{}")).get("labels")
        if not labels:
            raise UsageError(f"model {args.task!r} is not an nnU-Net task ensemble (use deepseg-lesion for the legacy models)")
        paths = output_paths(image.path, args.task, labels, None, ofolder=subject_folder(args.ofolder, image))
        other = [p.with_name(stem(p) + ".json") for p in paths.values()]
        _, lesion = split_outputs(args.task, paths)
        if lesion is not None:
            other += list(sidecar_paths(lesion))
        return Subject(image=image, grid_outputs=tuple(paths.values()), other_outputs=tuple(other))

    def work(link, subject: Subject) -> str:
        # existing outputs were refused, or accepted with --resume/--overwrite, before the batch started
        return segment_one(args, options, link, subject.image.path, output=None,
                           ofolder=subject_folder(args.ofolder, subject.image), overwrite=True)[2]

    return run_cohort(args, model=args.task, plan=plan, work=work, what=f"deepseg {args.task}")


def split_outputs(task: str, files: dict[str, Path]) -> tuple[Path | None, Path | None]:
    """(cord mask, lesion mask) among a task's outputs, by class name (one class: by SCT's suffix)."""
    from lesionseg.core.catalogue import task_info

    if len(files) == 1:
        ((name, path),) = files.items()
        return (None, path) if "lesion" in name or "lesion" in task_info(task).suffix else (path, None)
    lesion = next((p for name, p in files.items() if "lesion" in name), None)
    cord = next((p for name, p in files.items() if "lesion" not in name and ("cord" in name or name == "sc")), None)
    return cord, lesion
