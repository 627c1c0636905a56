"""The one writer of a segmentation's results: a `Result` becomes NIfTI masks and maps with their
sidecars, or DICOM SEG + SR (+ QC capture) of a DICOM series, or both, and a QC entry.

`Writer.outputs` names one image's files before it is segmented (with its job's names), so that a
batch can check them all first and a command can refuse existing ones; `Writer.write` computes
every object (DICOM datasets, QC images) before it writes the first file, and writes each file
atomically (`lesionseg.core.files`).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from lesionseg.client.result import CROPBOX, Job, Outputs, Result
from lesionseg.core import __version__
from lesionseg.core.catalogue import model_url
from lesionseg.core.enums import Plane, StrEnum, choices
from lesionseg.core.errors import InputError, UsageError
from lesionseg.core.files import atomic_write_text, check_folders_writable, refuse_inputs
from lesionseg.core.image import Image
from lesionseg.core.nifti import refuse_existing, save_nifti, stem


class OutputFormat(StrEnum):
    NIFTI, DICOM, BOTH = "nifti", "dicom", "both"

    @property
    def nifti(self) -> bool:
        return self in (OutputFormat.NIFTI, OutputFormat.BOTH)

    @property
    def dicom(self) -> bool:
        return self in (OutputFormat.DICOM, OutputFormat.BOTH)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Written:
    """The files one `Writer.write` wrote, in order (the QC entry as its folder), and its DICOM
    objects by SOP Instance UID."""

    files: list[Path]
    instances: dict[str, Path]


def refuse_non_conformant_uids(series) -> None:
    """Our SEG and SR reference their source by its Study, Series and SOP Instance UIDs, which a
    conformant object can carry only when they are conformant (at most 64 characters, digits and
    dots): refuse a series with any other, naming the file (the gateway refuses such instances
    when they arrive).

    Raises:
        InputError: naming the file, the attribute, the UID and the problem.
    """
    from lesionseg.client.dicom.uids import identity_problem

    for ds, path in zip(series.datasets, series.files):
        found = identity_problem(ds)
        if found is not None:
            name, uid, problem = found
            raise InputError(f"{path}: {name} {uid!r} is not a conformant DICOM UID ({problem}); a DICOM SEG cannot "
                             "reference it (write NIfTI, or fix the UIDs at the source)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Writer:
    """How results are written: `output_format`; `dicom_qc`: with DICOM, also a Secondary Capture of
    the QC mosaic; `qc`: the QC report folder (None: no QC entry); `qc_dataset`, `qc_subject`: the
    entry's dataset and subject (SCT 7's -qc-dataset, -qc-subject; default: guessed from the
    input's path); `qc_plane`: the QC view (-qc-plane); `argv`: the command line the sidecars record
    (default: this process's).

    Raises:
        UsageError: an unknown output format or QC plane, `dicom_qc` without DICOM output, or a QC
            dataset or subject without a QC folder.
    """

    output_format: OutputFormat = OutputFormat.NIFTI
    dicom_qc: bool = False
    qc: Path | None = None
    qc_dataset: str | None = None
    qc_subject: str | None = None
    qc_plane: Plane = Plane.AXIAL
    argv: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "output_format", OutputFormat(self.output_format))
        except ValueError:
            raise UsageError(f"--output-format {self.output_format!r}: choose one of {', '.join(choices(OutputFormat))}") from None
        if self.dicom_qc and not self.output_format.dicom:
            raise UsageError("--dicom-qc goes with --output-format dicom or both")
        named = [option for option, value in (("-qc-dataset", self.qc_dataset), ("-qc-subject", self.qc_subject)) if value]
        if named and self.qc is None:
            raise UsageError(f"{' and '.join(named)} name a QC entry: give -qc DIR too")
        plane = str(self.qc_plane).lower()
        if plane not in (Plane.AXIAL, Plane.SAGITTAL):
            raise UsageError(f"-qc-plane {self.qc_plane!r}: choose Axial or Sagittal")
        object.__setattr__(self, "qc_plane", Plane(plane))

    # -- naming ------------------------------------------------------------------------------

    def outputs(self, job: Job, path: Path, folder: Path | None, *, output: Path | None = None, stem_: str | None = None) -> Outputs:
        """The files of the image at `path` from `job`, in `folder` (None: the job's default) or
        `output`; DICOM files are named after `stem_` (default: the image's file stem)."""
        from lesionseg.client.lesion_stats import sidecar_paths

        names = job.outputs(path, folder, output=output)
        dicom = {}
        if self.output_format.dicom:
            from lesionseg.client.dicom.outputs import dicom_paths

            dicom = dicom_paths(stem_ or stem(Path(path)), job.model, names.folder, qc=self.dicom_qc)
        if not self.output_format.nifti:
            return dataclasses.replace(names, masks={}, maps={}, generated_by=False, dicom=dicom, qc=self.qc)
        lesion = sidecar_paths(names.lesion_file) if names.lesion_file is not None else None
        return dataclasses.replace(names, lesion_sidecars=lesion, dicom=dicom, qc=self.qc)

    def check(self, outputs: Outputs, image: Image, *, overwrite: bool) -> None:
        """Before segmenting: DICOM results need a DICOM series; existing files need `overwrite`.

        Raises:
            UsageError: DICOM output asked of a NIfTI input, or an output folder that cannot be
                written into; OutputExistsError.
        """
        if self.output_format.dicom and image.series is None:
            raise UsageError(f"{image.path}: --output-format {self.output_format} writes DICOM results of a DICOM series; "
                             "this input is NIfTI")
        if self.output_format.dicom:
            refuse_non_conformant_uids(image.series)
        refuse_inputs(outputs.files, [image.path])
        refuse_existing(outputs.files, overwrite=overwrite)
        check_folders_writable(path.parent for path in outputs.files)

    # -- writing -----------------------------------------------------------------------------

    def write(self, result: Result, outputs: Outputs) -> "Written":
        """Write `result` as `outputs` says; returns what was written."""
        from lesionseg.client.lesion_stats import write_sidecars

        image = result.image
        dicom = self._dicom(result) if outputs.dicom else {}
        qc = self._qc(result, outputs) if outputs.qc is not None else None
        written: list[Path] = []
        for name, path in outputs.masks.items():
            written.append(save_nifti(result.masks[name], image.affine, path, like=image.header))
        for name, path in outputs.maps.items():
            written.append(save_nifti(result.maps[name].data, result.maps[name].affine, path, like=image.header))
        if outputs.generated_by:
            written += [self._generated_by(result, path, outputs.sidecar(path)) for path in outputs.masks.values()]
        if outputs.lesion_sidecars is not None and result.stats is not None:
            written += write_sidecars(result.stats, outputs.lesion_file)  # type: ignore[arg-type]
        instances: dict[str, Path] = {}
        if dicom:
            from lesionseg.client.dicom.results import save

            for key, path in outputs.dicom.items():
                written.append(save(dicom[key], path))
                instances[str(dicom[key].SOPInstanceUID)] = path  # type: ignore[attr-defined]
        if qc is not None:
            from lesionseg.client.qc.report import write_entry

            written.append(write_entry(outputs.qc, *qc))  # type: ignore[arg-type]
            if CROPBOX in result.maps and CROPBOX in outputs.maps:  # SCT 7: an entry for sc-crop's box too
                from lesionseg.client.qc.masks import cropbox_qc

                written.append(write_entry(outputs.qc, *cropbox_qc(  # type: ignore[arg-type]
                    image, result.maps[CROPBOX].data, fname_box=outputs.maps[CROPBOX], contrast=outputs.contrast,
                    dataset=self.qc_dataset, subject=self.qc_subject)))
        return Written(files=written, instances=instances)

    def _dicom(self, result: Result) -> dict[str, object]:
        from lesionseg.client.dicom.outputs import dicom_objects

        return dicom_objects(result.image.series, result.model, lesion=result.lesion_mask, stats=result.stats,  # type: ignore[arg-type]
                             cord=result.cord, image=result.image, capture=self.dicom_qc)

    def _qc(self, result: Result, outputs: Outputs):
        from lesionseg.client.qc.masks import LesionLayer, qc_images

        lesion = None
        if result.lesion is not None and result.stats is not None:
            lesion = LesionLayer(voxels=result.lesion_mask, stats=result.stats, path=outputs.lesion_file)  # type: ignore[arg-type]
        if result.centerline is not None:
            cord, cord_source = result.centerline, result.cord_source
        else:
            cord = result.cord
            cord_source = outputs.named.get(result.cord_class) if result.cord_class else None  # type: ignore[arg-type]
            cord_source = cord_source or result.cord_source
        fname_seg = outputs.named.get(result.cord_class) if result.cord_class else None  # type: ignore[arg-type]
        return qc_images(result.image, cord=cord, cord_source=cord_source, lesion=lesion, fname_seg=fname_seg,
                         command=outputs.command, contrast=outputs.contrast, plane=self.qc_plane,
                         dataset=self.qc_dataset, subject=self.qc_subject)

    def _generated_by(self, result: Result, mask: Path, path: Path) -> Path:
        """SCT's JSON sidecar of a mask: what made it, from what."""
        record = {
            "GeneratedBy": [{
                "Name": "lesionseg deepseg",
                "Version": __version__,
                "Command": " ".join(self.argv if self.argv is not None else sys.argv),
                "Task": result.model.name,
                "Model": {"source": result.model.source + result.source_note, "url": model_url(result.model.name)},
            }],
            "Sources": [str(Path(result.image.path).resolve())],
        }
        return atomic_write_text(path, json.dumps(record, indent=2) + "\n")
