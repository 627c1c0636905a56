"""`lesionseg qc`: a QC report entry for masks that already exist (SCT's `sct_qc -i -s`), with lesion
statistics (`lesionseg.client.qc.masks.write_mask_qc`, as `deepseg -qc` and `deepseg-lesion -qc`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lesionseg.client.cli.parsers import command
from lesionseg.core.enums import Plane
from lesionseg.core.errors import EXIT_OK, UsageError

HELP = """\
examples:
  lesionseg qc -i t2.nii.gz -s t2_seg.nii.gz -qc qc/                     # cord only, axial mosaic
  lesionseg qc -i sub-01_T2w.nii.gz -s sub-01_T2w_seg.nii.gz -l sub-01_T2w_lesion.nii.gz -qc qc/
  lesionseg qc -i t2.nii.gz -s t2_seg.nii.gz -l t2_lesion.nii.gz -qc qc/ -p sagittal --subject sub-02
  # then open qc/index.html (offline; arrows or j/k move, t toggles the overlay, f/x/a mark)

The masks must be on the image's grid (same shape and affine). Cord in cyan, lesions in red.
axial: one tile per slice where the cord or a lesion is, cropped around the cord (radiological
view: patient's right on the left, anterior up). sagittal: three planes following the cord centre
at -2, 0 and +2 mm toward the patient's left, superior up, anterior on the left (as SCT).
With -l, lesion statistics (26-connected lesions, volumes in mm3) go into the entry and its
folder (<lesion>_lesions.tsv/.json) and are shown on index.html.
exit codes: 0 ok, 1 bad input file, 2 usage
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = command(sub, "qc", help="QC report entry for existing cord/lesion masks, with lesion statistics (sct_qc)", epilog=HELP)
    parser.add_argument("-i", "--input", required=True, type=Path, metavar="IMG", help="image (NIfTI, any orientation)")
    parser.add_argument("-s", "--seg", required=True, type=Path, metavar="SEG", help="spinal cord mask on the image's grid (cyan)")
    parser.add_argument("-l", "--lesion", type=Path, metavar="LESION", help="lesion mask on the image's grid (red); values > 0 are lesion (soft masks in [0, 1]: >= 0.5)")
    parser.add_argument("-qc", "--qc", required=True, type=Path, metavar="DIR", help="QC folder (SCT layout, index.html)")
    parser.add_argument("-p", "--plane", choices=[str(Plane.AXIAL), str(Plane.SAGITTAL)], default=Plane.AXIAL, help="view (default axial)")
    parser.add_argument("-c", "--contrast", metavar="NAME", help="contrast folder of the entry (default: the image's file stem)")
    parser.add_argument("--dataset", metavar="NAME", help="dataset of the entry (default: guessed from the image path, as SCT)")
    parser.add_argument("--subject", metavar="NAME", help="subject of the entry (default: guessed from the image path, as SCT)")
    parser.set_defaults(run=run)


def _folder_name(value: str | None, option: str) -> str | None:
    """A user-given entry name is one folder of the QC layout: no separator, not . or .."""
    if value is not None and (not value or "/" in value or "\\" in value or value in (".", "..")):
        raise UsageError(f"{option} {value!r} must be a plain folder name")
    return value


def run(args: argparse.Namespace) -> int:
    from lesionseg.client.qc.masks import write_mask_qc

    for value, option in ((args.contrast, "-c"), (args.dataset, "--dataset"), (args.subject, "--subject")):
        _folder_name(value, option)
    folder = write_mask_qc(
        args.input, args.seg, args.qc, lesion_path=args.lesion, plane=args.plane,
        contrast=args.contrast, dataset=args.dataset, subject=args.subject,
    )
    print(folder)
    print(args.qc / "index.html")
    return EXIT_OK
