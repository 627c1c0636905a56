"""SCT 6.0-6.3's ivadomed MP2RAGE lesion ensemble through Triton vs ivadomed itself (the oracle).

The oracle (tests/ivadomed_oracle/oracle.py, a subprocess) runs ivadomed's own
`inference.segment_volume` on every member of the same ensemble and takes SCT's mean over the
members. lesionseg's result travels as round(255 * mean), so the required agreement is the vote
fraction within half a quantisation step (1/510) on every voxel, which with 3 members means the
same votes everywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import IVADOMED_TASK, run_ivadomed_oracle
from served import infer_task

from lesionseg.client.cli import main
from lesionseg.core.nifti import load_nifti

pytestmark = [pytest.mark.server, pytest.mark.realdata, pytest.mark.slow]


@pytest.fixture(scope="module")
def members(session_repository: Path) -> Path:
    roots = [p for p in session_repository.parent.iterdir() if p.name.startswith("ivadomed_models")]
    assert roots, "the session repository fixture did not build the ivadomed test members"
    return roots[0]


@pytest.mark.parametrize("image", ["t2/t2.nii.gz", "t2s/t2s.nii.gz", "t1/t1w.nii.gz"])
def test_ensemble_matches_ivadomed(ivadomed_server, shared: Path, members: Path, tmp_path: Path, image: str) -> None:
    path = shared / "sct_testing_data" / image
    seg, prob, params = infer_task(ivadomed_server.settings.grpc_url, load_nifti(path), IVADOMED_TASK)
    run_ivadomed_oracle("segment", str(members), str(path), str(tmp_path / "oracle.npy"))
    reference = np.load(tmp_path / "oracle.npy")
    mean = prob[0] / 255.0
    diff = np.abs(mean - reference)
    print(f"{image}: max vote difference {diff.max():.5f}, votes {np.unique(reference).round(3).tolist()}, "
          f"{int((reference > 0).sum())} voxels with a vote")
    assert mean.shape == reference.shape == seg.shape
    assert 0 < (reference > 0).sum() < reference.size  # the random ensemble is not degenerate
    assert len(np.unique(reference)) > 2  # members disagree somewhere: the mean is tested
    assert diff.max() <= 1 / 510 + 1e-9
    assert np.array_equal(seg, (reference >= 0.5).astype(np.uint8))
    assert json.loads(params["plan"])["orientation"] == "LPI" == params["orientation"]


def test_deepseg_writes_sct_soft_output(ivadomed_server, shared: Path, tmp_path: Path) -> None:
    """Like SCT, the default output is the members' mean; -thr binarises it; -largest alone is refused."""
    image = shared / "sct_testing_data" / "t2" / "t2.nii.gz"
    url = ivadomed_server.settings.grpc_url
    soft, binary = tmp_path / "soft.nii.gz", tmp_path / "bin.nii.gz"
    assert main(["deepseg", "-i", str(image), "-task", IVADOMED_TASK, "-o", str(soft), "-url", url]) == 0
    values = np.asanyarray(nib.load(soft).dataobj)
    votes = np.unique(values) * 3  # 3 members: multiples of 1/3 (quantised to 1/255)
    assert values.dtype == np.float32 and len(votes) > 2 and np.abs(votes - np.rint(votes)).max() < 3 / 510
    assert main(["deepseg", "-i", str(image), "-task", IVADOMED_TASK, "-thr", "0.5", "-o", str(binary), "-url", url]) == 0
    mask = np.asanyarray(nib.load(binary).dataobj)
    assert mask.dtype == np.uint8 and np.array_equal(mask, (values > 0.5).astype(np.uint8))
    assert main(["deepseg", "-i", str(image), "-task", IVADOMED_TASK, "-largest", "1", "-o", str(tmp_path / "x.nii.gz"), "-url", url]) == 2
    assert not (tmp_path / "x.nii.gz").exists()
