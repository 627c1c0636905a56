"""Masks and lesion statistics of one series as DICOM objects viewers and PACS take (highdicom).

- `segmentation`: a DICOM SEG, BINARY, uncompressed, one frame per source slice (empty frames
  kept: OHIF has misplaced SEGs whose empty frames were omitted), frames aligned pixel for pixel
  with the source slices and referencing every source instance, in the source's Frame of
  Reference. Segments "multiple sclerosis lesion" (SCT 49755003 morphologically abnormal
  structure / 52988006 lesion, in the spinal cord) and "spinal cord" (SCT 91723000 anatomical
  structure / 2748008 spinal cord), AUTOMATIC, with the algorithm's name and version.
- `report`: a Comprehensive 3D SR following TID 1500 (Measurement Report): for the lesion
  segment the lesion count and total volume (mm3); one group per lesion with its volume (the
  numbers of `<mask>_lesions.tsv`); the cord volume when there is a cord segment.

UIDs are derived from the source SeriesInstanceUID, the model and its version (`Algorithm`), so
running the same model on the same series again writes objects with the same UIDs, which a PACS
stores over the old ones instead of beside them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from lesionseg.client.dicom.series import DicomSeries
from lesionseg.client.dicom.uids import derived_uid
from lesionseg.client.lesion_stats import LesionStats
from lesionseg.core import __version__
from lesionseg.core.files import atomic_path

MANUFACTURER = "lesionseg"
#: SNOMED CT 113091000 "Magnetic resonance imaging" (TID 1500's procedure reported)
MR_PROCEDURE = ("113091000", "SCT", "Magnetic resonance imaging")
SEG_SERIES_NUMBER_OFFSET = 9000
SR_SERIES_NUMBER_OFFSET = 9100
QC_SERIES_NUMBER_OFFSET = 9200

LESION, CORD = "lesion", "cord"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Algorithm:
    """The model that made the masks: `name` (the served model, e.g. seg_ms_lesion or
    deepseg_lesion_t2s) and `version` (lesionseg's version and a fingerprint of the served
    model's parameters, so a changed model gives new UIDs)."""

    name: str
    version: str
    source: str = ""

    @classmethod
    def of_model(cls, name: str, parameters: dict[str, str]) -> "Algorithm":
        fingerprint = hashlib.sha256(json.dumps(parameters, sort_keys=True).encode()).hexdigest()[:12]
        return cls(name=name, version=f"{__version__}+{fingerprint}", source=parameters.get("source", ""))

    def uid(self, series_uid: str, what: str) -> str:
        """The UID of `what` made by this algorithm from the series `series_uid` (deterministic)."""
        return derived_uid(series_uid, self.name, self.version, what)


def _segment_description(number: int, name: str, algorithm: Algorithm, series_uid: str):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    identification = hd.AlgorithmIdentificationSequence(name=algorithm.name, family=codes.DCM.ArtificialIntelligence,
                                                        version=algorithm.version, source=algorithm.source[:64] or None)
    if name == LESION:
        return hd.seg.SegmentDescription(
            segment_number=number, segment_label="multiple sclerosis lesion",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion, anatomic_regions=[codes.SCT.SpinalCord],
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=identification,
            tracking_uid=algorithm.uid(series_uid, f"segment {name}"), tracking_id="multiple sclerosis lesions",
            display_color=hd.color.CIELabColor(62.0, 68.0, 48.0))
    return hd.seg.SegmentDescription(
        segment_number=number, segment_label="spinal cord",
        segmented_property_category=codes.SCT.AnatomicalStructure, segmented_property_type=codes.SCT.SpinalCord,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=identification,
        tracking_uid=algorithm.uid(series_uid, f"segment {name}"), tracking_id="spinal cord",
        display_color=hd.color.CIELabColor(88.0, -30.0, -10.0))


def segment_names(masks: dict[str, np.ndarray]) -> list[str]:
    """The segments written for `masks`, in segment-number order (lesion first, then cord)."""
    return [name for name in (LESION, CORD) if name in masks]


def source_frames(series: DicomSeries, mask: np.ndarray) -> np.ndarray:
    """An (x, y, z) mask on the series grid as (frames, rows, columns), frame i for source frame i:
    the sorted slices for a single-frame series, the instance's own frame order for a multi-frame one."""
    frames = np.zeros((len(series.frames), mask.shape[1], mask.shape[0]), np.uint8)
    for k, frame in enumerate(series.frames):
        target = frame.frame if series.multiframe else k
        frames[target] = mask[:, :, k].T
    return frames


def source_images(series: DicomSeries) -> list:
    """The source instances in SEG frame order (see `source_frames`)."""
    if series.multiframe:
        return [series.datasets[0]]
    return [series.datasets[frame.index] for frame in series.frames]


def segmentation(series: DicomSeries, masks: dict[str, np.ndarray], algorithm: Algorithm):
    """The DICOM SEG of `masks` (name -> (x, y, z) mask on the series grid, > 0 inside; names
    `LESION` and/or `CORD`)."""
    import highdicom as hd

    names = segment_names(masks)
    if not names:
        raise ValueError(f"no lesion or cord mask among {sorted(masks)}")
    for name in names:
        if masks[name].shape != series.data.shape:
            raise ValueError(f"{name} mask has shape {masks[name].shape}, series {series.data.shape}")
    pixels = np.stack([source_frames(series, (masks[name] > 0).astype(np.uint8)) for name in names], axis=-1)
    first = series.first
    return hd.seg.Segmentation(
        source_images=source_images(series), pixel_array=pixels.astype(bool),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_segment_description(i + 1, name, algorithm, series.series_uid) for i, name in enumerate(names)],
        series_instance_uid=algorithm.uid(series.series_uid, "SEG series"),
        series_number=SEG_SERIES_NUMBER_OFFSET + int(first.get("SeriesNumber", 0) or 0) % 100,
        sop_instance_uid=algorithm.uid(series.series_uid, "SEG instance"), instance_number=1,
        manufacturer=MANUFACTURER, manufacturer_model_name=algorithm.name[:64], software_versions=algorithm.version,
        device_serial_number="0", omit_empty_frames=False,
        series_description=f"{algorithm.name} segmentation"[:64],
        content_label="LESIONSEG", content_description=f"{algorithm.name} masks"[:64],
        content_creator_name="lesionseg^")


def report(series: DicomSeries, seg, stats: LesionStats | None, algorithm: Algorithm, *,
           cord_volume_mm3: float | None = None):
    """The TID 1500 Comprehensive 3D SR of `stats` (the lesion segment's statistics) and the cord
    volume, referencing the segments of `seg` and the source series."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    algorithm_id = hd.sr.AlgorithmIdentification(name=algorithm.name, version=algorithm.version)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=algorithm.uid("", "device"), name=algorithm.name[:64], manufacturer_name=MANUFACTURER,
            model_name=algorithm.name[:64]))
    numbers = {d.SegmentLabel: int(d.SegmentNumber) for d in seg.SegmentSequence}
    groups = []

    def segment(label: str):
        return hd.sr.ReferencedSegment(sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID,
                                       segment_number=numbers[label],
                                       source_series=hd.sr.SourceSeriesForSegmentation(series.series_uid))

    if stats is not None:
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=algorithm.uid(series.series_uid, "lesions group"),
                                                         identifier="multiple sclerosis lesions"),
            referenced_segment=segment("multiple sclerosis lesion"), finding_type=codes.SCT.Lesion,
            algorithm_id=algorithm_id,
            measurements=[
                hd.sr.Measurement(name=codes.SCT.NumberOfLesions, value=stats.count, unit=codes.UCUM.NoUnits,
                                  algorithm_id=algorithm_id),
                hd.sr.Measurement(name=codes.SCT.Volume, value=stats.total_volume_mm3, unit=codes.UCUM.CubicMillimeter,
                                  algorithm_id=algorithm_id),
            ]))
        for lesion in stats.lesions:
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=algorithm.uid(series.series_uid, f"lesion {lesion.label}"),
                                                             identifier=f"lesion {lesion.label}"),
                finding_type=codes.SCT.Lesion, algorithm_id=algorithm_id,
                measurements=[hd.sr.Measurement(name=codes.SCT.Volume, value=lesion.volume_mm3,
                                                unit=codes.UCUM.CubicMillimeter, algorithm_id=algorithm_id)]))
    if cord_volume_mm3 is not None:
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=algorithm.uid(series.series_uid, "cord group"), identifier="spinal cord"),
            referenced_segment=segment("spinal cord"), finding_type=codes.SCT.SpinalCord, algorithm_id=algorithm_id,
            measurements=[hd.sr.Measurement(name=codes.SCT.Volume, value=cord_volume_mm3, unit=codes.UCUM.CubicMillimeter,
                                            algorithm_id=algorithm_id)]))
    measurement_report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=Code(*MR_PROCEDURE), imaging_measurements=groups)
    first = series.first
    return hd.sr.Comprehensive3DSR(
        evidence=[*source_images(series), seg], content=measurement_report,
        series_instance_uid=algorithm.uid(series.series_uid, "SR series"),
        series_number=SR_SERIES_NUMBER_OFFSET + int(first.get("SeriesNumber", 0) or 0) % 100,
        sop_instance_uid=algorithm.uid(series.series_uid, "SR instance"), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, series_description=f"{algorithm.name} lesion report"[:64])


def qc_capture(series: DicomSeries, image, algorithm: Algorithm, *, lesion: np.ndarray | None, cord: np.ndarray | None):
    """A Secondary Capture of the QC report's axial mosaic (RGB: lesions red, cord cyan over the
    image, tiles from inferior to superior, anterior up, the patient's right on the left) of
    `image` (the series' `Image`) and masks on its grid, for viewers without SEG support."""
    import highdicom as hd

    from lesionseg.client.qc.masks import rpi_views

    lesion_voxels = (lesion > 0).astype(np.uint8) if lesion is not None else None
    background, overlay, _ = rpi_views(image, cord if cord is not None and cord.any() else None, lesion_voxels, "axial", "cord")
    alpha = overlay[..., 3:4].astype(np.float32) / 255.0
    rgb = np.rint(background[..., None] * (1.0 - alpha) + overlay[..., :3] * alpha).astype(np.uint8)
    first = series.first
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=first, pixel_array=np.ascontiguousarray(rgb), photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", series_instance_uid=algorithm.uid(series.series_uid, "QC series"),
        series_number=QC_SERIES_NUMBER_OFFSET + int(first.get("SeriesNumber", 0) or 0) % 100,
        sop_instance_uid=algorithm.uid(series.series_uid, "QC instance"), instance_number=1, manufacturer=MANUFACTURER,
        patient_orientation=("L", "P"), series_description=f"{algorithm.name} QC"[:64])
    capture.Laterality = None  # General Series type 2C: present, empty (the spinal cord is not a paired part)
    return capture


def save(dataset, path: Path) -> Path:
    """Write a DICOM object atomically (Part 10 file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        dataset.save_as(str(tmp), enforce_file_format=True)
    return path
