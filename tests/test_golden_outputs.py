"""Golden outputs: what every task family writes for every real image of ../shared/sct_testing_data,
recorded once and compared bit for bit ever after.

Each case is one command line (or one gateway series) run against the session's real embedded
Triton: the legacy pipelines, the nnU-Net, MONAI and ivadomed tasks, crop-to-cord, the
post-processing options, DICOM inputs with SEG + SR + QC capture outputs, batches and the
gateway's segmentation of a spooled series. What a case wrote (masks, soft maps, sidecars, QC
entries and images, DICOM objects), what it printed and its exit code are snapshotted
(`golden_outputs.snapshot`) and compared with `tests/golden/outputs/<case>.json` (+ `.npz`, the
voxels of every NIfTI output).

Record (only when a change of behaviour is intended, and say why in the commit):
    LESIONSEG_RECORD_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden_outputs.py
(`LESIONSEG_RECORD_GOLDEN=missing` records only the cases that have no golden outputs yet.)

Networks compute in floating point, and a CPU with other vector instructions may round
differently. The recording names its CPU: on that CPU class every byte must match; on another,
a difference in a mask or soft map is measured instead (masks: Dice >= 0.99 per file; soft maps:
at most 2/255 apart) and the test says so, and everything derived from the voxels (hashes,
statistics, DICOM pixels) is then reported, not asserted.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from conftest import HAVE_IVADOMED, HAVE_TORCH, IVADOMED_TASK, MONAI_TASK
from golden_outputs import Normaliser, differences, snapshot, without_derived_ids

from lesionseg.client.cli import main

pytestmark = [pytest.mark.server, pytest.mark.realdata, pytest.mark.slow]

GOLDEN = Path(__file__).parent / "golden" / "outputs"
#: 1: record every case; missing: record the cases that have no golden outputs yet
RECORD = os.environ.get("LESIONSEG_RECORD_GOLDEN", "")

IMAGES = ("t1/t1w.nii.gz", "t2/t2.nii.gz", "t2/t2_fake_lesion.nii.gz", "t2s/t2s.nii.gz", "t2s/t2s_uncropped.nii.gz")
#: the legacy contrast of each image (t1w has none of its own: the t2 pipeline, which must say what it finds)
LEGACY = {"t1/t1w.nii.gz": "t2", "t2/t2.nii.gz": "t2_ax", "t2/t2_fake_lesion.nii.gz": "t2_ax", "t2s/t2s.nii.gz": "t2s",
          "t2s/t2s_uncropped.nii.gz": "t2s"}
#: images left out of the cord-task cases (nnU-Net with merged folds and mirroring, MONAI): they
#: resample t2s_uncropped's 7.5 mm slices to a grid of millions of voxels, minutes on two cores
SLOW_CORD = ("t2s/t2s_uncropped.nii.gz",)
#: the DICOM series of tests/dicom_data.py and their legacy contrast
SERIES = {"axial": "t2s", "sagittal": "t2_ax", "oblique": "t2", "multiframe": "t2_ax", "jpeg2000": "t2_ax"}


@dataclasses.dataclass(frozen=True)
class Case:
    """One golden case: `argv(data, out)` is the command line (data: sct_testing_data, out: the
    case's output folder), `needs` the server fixture it needs."""

    name: str
    needs: str
    argv: Callable[[Path, Path], list[str]] | None = None
    inputs: str = "data"  # data: ../shared/sct_testing_data; dicom: the DICOM series; cohort: a copied folder


def _name(image: str) -> str:
    return Path(image).name.removesuffix(".nii.gz")


def _cases() -> list[Case]:
    cases = []
    for image in IMAGES:
        stem = _name(image)
        cases.append(Case(f"legacy-{stem}", "legacy", lambda d, o, i=image: [
            "deepseg-lesion", "-i", str(d / i), "-c", LEGACY[i], "-ofolder", str(o / "out"), "-qc", str(o / "qc")]))
        cases.append(Case(f"seg_ms_lesion-{stem}", "nnunet", lambda d, o, i=image: [
            "deepseg", "-i", str(d / i), "-task", "seg_ms_lesion", "-ofolder", str(o / "out"), "-qc", str(o / "qc")]))
        if image not in SLOW_CORD:
            cases.append(Case(f"seg_sc_contrast_agnostic-{stem}", "nnunet", lambda d, o, i=image: [
                "deepseg", "-i", str(d / i), "-task", "seg_sc_contrast_agnostic", "-ofolder", str(o / "out"),
                "-qc", str(o / "qc")]))
            cases.append(Case(f"crop_to_cord-{stem}", "nnunet", lambda d, o, i=image: [
                "deepseg", "-i", str(d / i), "-task", "seg_ms_lesion", "--crop-to-cord", "-ofolder", str(o / "out"),
                "-qc", str(o / "qc")]))
            cases.append(Case(f"monai-{stem}", "nnunet", lambda d, o, i=image: [
                "deepseg", "-i", str(d / i), "-task", MONAI_TASK, "-ofolder", str(o / "out"), "-qc", str(o / "qc")]))
        cases.append(Case(f"ivadomed-{stem}", "ivadomed", lambda d, o, i=image: [
            "deepseg", "-i", str(d / i), "-task", IVADOMED_TASK, "-ofolder", str(o / "out"), "-qc", str(o / "qc")]))
    cases += [
        Case("legacy-centerline-file-t2", "legacy", lambda d, o: [
            "deepseg-lesion", "-i", str(d / "t2/t2.nii.gz"), "-c", "t2_ax", "-centerline", "file",
            "-file_centerline", str(d / "t2/t2_centerline-manual.nii.gz"), "-ofolder", str(o / "out")]),
        Case("multiclass-t2_fake_lesion", "nnunet", lambda d, o: [
            "deepseg", "-i", str(d / "t2/t2_fake_lesion.nii.gz"), "-task", "test_multiclass", "-ofolder", str(o / "out"),
            "-qc", str(o / "qc")]),
        Case("options-thr-largest-fill-t1w", "nnunet", lambda d, o: [
            "deepseg", "-i", str(d / "t1/t1w.nii.gz"), "-task", "seg_sc_contrast_agnostic", "-thr", "0.3", "-largest", "1",
            "-fill-holes", "-o", str(o / "out" / "cord.nii.gz")]),
        Case("options-remove-small-t2s", "nnunet", lambda d, o: [
            "deepseg", "-i", str(d / "t2s/t2s.nii.gz"), "-task", "seg_ms_lesion", "-thr", "0.2", "-remove-small", "3mm3",
            "-ofolder", str(o / "out")]),
        Case("soft-thr0-t2", "nnunet", lambda d, o: [
            "deepseg", "-i", str(d / "t2/t2.nii.gz"), "-task", "seg_ms_lesion", "-thr", "0", "-ofolder", str(o / "out")]),
        Case("ivadomed-thr-t2", "ivadomed", lambda d, o: [
            "deepseg", "-i", str(d / "t2/t2.nii.gz"), "-task", IVADOMED_TASK, "-thr", "0.5", "-ofolder", str(o / "out")]),
        Case("batch-legacy", "legacy", lambda d, o: [
            "deepseg-lesion", "-i", str(d), "-c", "t2s", "-ofolder", str(o / "out"), "-qc", str(o / "qc"), "-j", "2",
            "--summary", str(o / "out" / "summary.tsv")], inputs="cohort"),
        Case("batch-nnunet", "nnunet", lambda d, o: [
            "deepseg", "-i", str(d), "-task", "seg_ms_lesion", "-ofolder", str(o / "out"), "-qc", str(o / "qc"), "-j", "2"],
             inputs="cohort"),
    ]
    for name, contrast in SERIES.items():
        cases.append(Case(f"dicom-legacy-{name}", "legacy", lambda d, o, n=name, c=contrast: [
            "deepseg-lesion", "-i", str(d / n), "-c", c, "-ofolder", str(o / "out"), "-qc", str(o / "qc"),
            "--output-format", "both", "--dicom-qc"], inputs="dicom"))
        cases.append(Case(f"dicom-nnunet-{name}", "nnunet", lambda d, o, n=name: [
            "deepseg", "-i", str(d / n), "-task", "seg_ms_lesion", "-ofolder", str(o / "out"), "--output-format", "both",
            "--dicom-qc"], inputs="dicom"))
    cases += [Case("gateway-legacy-axial", "legacy", inputs="gateway"),
              Case("gateway-nnunet-sagittal-cord", "nnunet", inputs="gateway"),
              Case("gateway-crop-to-cord-oblique", "nnunet", inputs="gateway")]
    return cases


CASES = _cases()

#: gateway cases: series, route (as in gateway.toml)
GATEWAY_ROUTES = {
    "gateway-legacy-axial": ("axial", {"name": "axial", "contrast": "t2s"}),
    "gateway-nnunet-sagittal-cord": ("sagittal", {"name": "task", "task": "seg_ms_lesion", "cord_task": "seg_sc_contrast_agnostic"}),
    "gateway-crop-to-cord-oblique": ("oblique", {"name": "crop", "task": "seg_ms_lesion", "crop_to_cord": True}),
}


@pytest.fixture(scope="module")
def dicom_series(shared: Path, tmp_path_factory) -> Path:
    """The DICOM test series (tests/dicom_data.py) of the real volumes, one folder each."""
    from dicom_data import write

    root = tmp_path_factory.mktemp("golden_series") / "dicom" / "series"  # QC names dataset and subject by folder
    for name in SERIES:
        write(shared, name, root / name)
    return root


@pytest.fixture(scope="module")
def cohort(shared: Path, tmp_path_factory) -> Path:
    """A folder of two subjects (copies of the T2*w images) for the batch cases."""
    root = tmp_path_factory.mktemp("golden_cohort") / "cohort"
    for subject, image in (("sub-a", "t2s/t2s.nii.gz"), ("sub-b", "t2s/t2s_uncropped.nii.gz")):
        (root / subject).mkdir(parents=True)
        shutil.copy(shared / "sct_testing_data" / image, root / subject / Path(image).name)
    return root


def _server(request, needs: str):
    if needs == "ivadomed" and not HAVE_IVADOMED:
        pytest.skip("ivadomed (the oracle that made the ivadomed test ensemble) not installed")
    if needs in ("nnunet", "ivadomed") and not HAVE_TORCH:
        pytest.skip("torch / nnunetv2 not installed: the nnU-Net, MONAI and ivadomed test tasks are not exported")
    return request.getfixturevalue("legacy_server" if needs == "legacy" else f"{needs}_server")


def _run_cli(case: Case, inputs: Path, out: Path, url: str, capsys) -> dict:
    capsys.readouterr()
    code = main(["-q", *case.argv(inputs, out), "-url", url])  # type: ignore[misc]
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("lesionseg: error:")]
    stdout = [line for line in captured.out.splitlines() if "subjects:" not in line]  # the batch total holds seconds
    if case.inputs == "cohort":  # the batch table: keep image, status and result, not seconds
        stdout = [" ".join(line.split()[:3] + line.split()[5:]) if line[:1].isdigit() else line.split()[0] for line in stdout
                  if line.strip()]
    return {"exit": code, "stdout": stdout, "errors": errors}


def _run_gateway(case: Case, series_root: Path, out: Path, url: str) -> dict:
    """The gateway's segmentation of one spooled series (receive and send are the gateway tests')."""
    import pydicom

    from lesionseg.gateway.config import load_config
    from lesionseg.gateway.service import Gateway
    from lesionseg.core.errors import LesionsegError

    series_name, route = GATEWAY_ROUTES[case.name]
    lines = [f'{k} = {json.dumps(v)}' for k, v in route.items()]
    config_file = out / "gateway.toml"
    config_file.write_text(f'[gateway]\nspool = "spool"\nurl = "{url}"\n[callers]\nSCU = []\n[[routes]]\n' + "\n".join(lines) + "\n")
    gateway = Gateway(load_config(config_file))
    try:
        uid = ""
        for path in sorted((series_root / series_name).iterdir()):
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
            uid = str(ds.SeriesInstanceUID)
            stored = gateway.spool.write(uid, str(ds.SOPInstanceUID), path.read_bytes())
            gateway.journal.add_instance(sop_uid=str(ds.SOPInstanceUID), series_uid=uid, study_uid=str(ds.StudyInstanceUID),
                                         patient_id=str(ds.PatientID), description=str(ds.SeriesDescription),
                                         calling_ae="SCU", path=stored, size=stored.stat().st_size)
        try:
            objects = gateway.segment(uid, gateway.config.routes[0])
            errors = []
        except LesionsegError as exc:
            objects, errors = {}, [f"lesionseg: error: {exc}"]
    finally:
        gateway.journal.close()
    shutil.rmtree(out / "spool" / "instances")
    for journal in (out / "spool").glob("journal.sqlite*"):  # times of arrival: not an output
        journal.unlink()
    (out / "gateway.toml").unlink()
    return {"exit": 0 if not errors else 1, "stdout": sorted(without_derived_ids(uid) for uid in objects), "errors": errors}


def _cpu() -> str:
    from lesionseg.server.backend.runtimes import cpu_description

    return cpu_description()


def _tolerant(expected: dict, actual: dict, golden_arrays, arrays: dict) -> list[str]:
    """On another CPU class: the masks and soft maps measured, the rest reported."""
    problems = []
    for key, want in golden_arrays.items():
        got = arrays.get(key)
        if got is None or got.shape != want.shape:
            problems.append(f"{key}: missing or of another shape")
        elif want.dtype.kind == "f" and want.size and want.max() <= 1.0:
            if np.abs(got.astype(np.float64) - want).max() > 2 / 255 + 1e-6:
                problems.append(f"{key}: soft map differs by {np.abs(got - want).max():.4f}")
        else:
            a, b = want > 0, got > 0
            dice = 2 * np.sum(a & b) / max(np.sum(a) + np.sum(b), 1)
            if (a.any() or b.any()) and dice < 0.99:
                problems.append(f"{key}: Dice {dice:.4f} < 0.99")
    if expected["exit"] != actual["exit"]:
        problems.append(f"exit code {expected['exit']} != {actual['exit']}")
    return problems


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden_outputs(case: Case, request, shared: Path, tmp_path: Path, tmp_path_factory, capsys) -> None:
    golden_json, golden_npz = GOLDEN / f"{case.name}.json", GOLDEN / f"{case.name}.npz"
    if RECORD == "missing" and golden_json.is_file():
        pytest.skip("LESIONSEG_RECORD_GOLDEN=missing: recorded already")
    server = _server(request, case.needs)
    url = server.settings.grpc_url
    data = shared / "sct_testing_data"
    out = tmp_path / "run"
    out.mkdir()
    if case.inputs == "gateway":
        inputs = request.getfixturevalue("dicom_series")
        result = _run_gateway(case, inputs, out, url)
    else:
        inputs = {"data": data, "dicom": None, "cohort": None}[case.inputs] or \
            request.getfixturevalue("dicom_series" if case.inputs == "dicom" else "cohort")
        result = _run_cli(case, inputs, out, url, capsys)
    normaliser = Normaliser({str(out): "<OUT>", str(data): "<DATA>", str(inputs): "<IN>", os.getcwd(): "<CWD>",
                             str(tmp_path_factory.getbasetemp()): "<SESSION>"})
    arrays: dict[str, np.ndarray] = {}
    actual = {"exit": result["exit"], "stdout": [normaliser.text(s) for s in result["stdout"]],
              "errors": [normaliser.text(s) for s in result["errors"]],
              "files": snapshot(out, normaliser, prefix=case.name, arrays=arrays)}
    if RECORD == "1" or (RECORD == "missing" and not golden_json.is_file()):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        golden_json.write_text(json.dumps({"cpu": _cpu(), **actual}, indent=1) + "\n")
        golden_npz.unlink(missing_ok=True)
        if arrays:
            np.savez_compressed(golden_npz, **arrays)
        return
    assert golden_json.is_file(), f"no golden outputs for {case.name}: record them (see the module docstring)"
    expected = json.loads(golden_json.read_text())
    recorded_on = expected.pop("cpu")
    problems = differences(expected, actual)
    if problems and recorded_on != _cpu():
        golden_arrays = dict(np.load(golden_npz)) if golden_npz.is_file() else {}
        hard = _tolerant(expected, actual, golden_arrays, arrays)
        print(f"{case.name}: recorded on {recorded_on}, run on {_cpu()}; {len(problems)} byte differences "
              f"(reported, not asserted): {problems[:5]}")
        assert not hard, f"{case.name} differs beyond the other-CPU tolerance: {hard}"
        return
    assert not problems, f"{case.name} differs from its golden outputs:\n" + "\n".join(problems[:40])
    if golden_npz.is_file():
        golden_arrays = np.load(golden_npz)
        for key in golden_arrays.files:
            np.testing.assert_array_equal(arrays[key], golden_arrays[key], err_msg=key)
