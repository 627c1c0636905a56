"""One image, one road: through the command line, a served model's configuration is fetched once,
the lesion statistics are computed once and the threshold applied once, whatever is written
(masks, sidecars, QC entry, DICOM SEG + SR); the legacy pipeline's lesion mask is thresholded
once, on the server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lesionseg.client import lesion_stats, postprocessing
from lesionseg.client.cli import main
from lesionseg.client.transport import Transport

pytestmark = [pytest.mark.server, pytest.mark.realdata]


@pytest.fixture
def calls(monkeypatch) -> dict[str, list]:
    """Every call of the functions counted here, with its first argument."""
    seen: dict[str, list] = {"config": [], "stats": [], "threshold": []}

    def spy(name: str, owner, attribute: str) -> None:
        original = getattr(owner, attribute)

        def counted(*args, **kwargs):
            seen[name].append(args[1] if name == "config" else None)
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, attribute, counted)

    spy("config", Transport, "model_config")
    spy("stats", lesion_stats, "lesion_stats")
    spy("threshold", postprocessing, "threshold")
    return seen


def test_task_image_fetches_the_config_once(nnunet_server, shared: Path, tmp_path: Path, calls) -> None:
    from dicom_data import write

    series = write(shared, "axial", tmp_path / "series")
    code = main(["-q", "deepseg", "-i", str(series), "-task", "seg_ms_lesion", "-thr", "0.5", "-ofolder", str(tmp_path / "out"),
                 "-qc", str(tmp_path / "qc"), "--output-format", "both", "--dicom-qc", "-url", nnunet_server.settings.grpc_url])
    assert code == 0
    assert calls["config"] == ["seg_ms_lesion"]
    assert len(calls["stats"]) == 1  # sidecars, QC entry and SR share one computation
    assert len(calls["threshold"]) == 1  # one foreground class, -thr applied once


def test_legacy_image_fetches_the_config_once(legacy_server, shared: Path, tmp_path: Path, calls) -> None:
    image = shared / "sct_testing_data" / "t2s" / "t2s.nii.gz"
    code = main(["-q", "deepseg-lesion", "-i", str(image), "-c", "t2s", "-ofolder", str(tmp_path / "out"),
                 "-qc", str(tmp_path / "qc"), "-url", legacy_server.settings.grpc_url])
    assert code == 0
    assert calls["config"] == ["deepseg_lesion_t2s"]
    assert len(calls["stats"]) == 1
    assert calls["threshold"] == []  # the legacy mask comes thresholded from the server


def test_the_legacy_server_model_returns_the_pipelines_own_mask(monkeypatch) -> None:
    """The Python-backend model answers the mask `segment_lesions` thresholded, not a second one."""
    from lesionseg.server.backend import legacy as backend
    from lesionseg.server.pipelines import legacy as pipeline

    made = []

    def recorded(*args, **kwargs):
        made.append(pipeline.segment_lesions(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(backend, "segment_lesions", recorded)
    model = backend.LegacyPipelineModel()
    model.params = pipeline.CONTRASTS["t2s"]
    model.ctr_model = model.lesion_model = "unused"
    model.predictor = lambda name: (lambda batch: np.full(batch.shape, 0.3, np.float32))  # type: ignore[method-assign]
    image = np.zeros((40, 40, 4), np.float32)
    image[15:25, 15:25] = 100.0
    centerline = np.zeros(image.shape, np.uint8)
    centerline[20, 20, :] = 1
    outputs = model.process({"IMAGE": image, "SPACING": np.array([0.5, 0.5, 5.0], np.float32), "CENTERLINE": centerline})
    (result,) = made
    assert outputs["SEG"] is result.seg and result.seg.any()
