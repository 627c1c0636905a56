"""The committed model_repository/ is exactly what the export code generates, and carries SCT's constants."""

from __future__ import annotations

from pathlib import Path

import pytest

from lesionseg.server.repository.check import check_repository
from lesionseg.server.repository.legacy import network_model, write_entries
from lesionseg.server.repository.modelconfig import parameters, read_config

COMMITTED = Path(__file__).parent.parent / "model_repository"


def files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.name in ("config.pbtxt", "model.py"))


def test_committed_repository_matches_generation(tmp_path: Path) -> None:
    write_entries(tmp_path)
    assert files(tmp_path) == files(COMMITTED)
    for rel in files(tmp_path):
        assert (tmp_path / rel).read_text() == (COMMITTED / rel).read_text(), rel


def test_only_weights_are_missing(tmp_path: Path) -> None:
    problems = [str(p) for p in check_repository(COMMITTED)]
    assert problems and all(p.endswith("version 1 lacks model.onnx") for p in problems), problems


# SCT's constants (spinalcordtoolbox deepseg_/lesion.py; DESIGN.md rounds the t2 landmarks)
SCT = {
    "t2": ([0, 136.832187, 312.158435, 448.968030, 568.657779, 696.671586, 859.221138, 1074.463414,
            1373.289174, 1811.522669, 2611], 871.309, 557.916, "t2"),
    "t2_ax": ([0, 112.195357, 291.611185, 446.727066, 581.103970, 702.979079, 833.318257, 1011.856313,
               1268.801813, 1687.137075, 2611], 835.592, 528.386, "t2"),
    "t2s": ([0, 123.246969, 226.422561, 338.361023, 532.341924, 788.693675, 1096.975553, 1407.979466,
             1716.524530, 2079.788451, 2611], 1011.31, 678.985, "t2s"),
}


@pytest.mark.parametrize("contrast", sorted(SCT))
def test_pipeline_config_carries_sct_constants(contrast: str) -> None:
    landmarks, mean, std, ctr = SCT[contrast]
    config = read_config(COMMITTED / f"deepseg_lesion_{contrast}" / "config.pbtxt")
    params = parameters(config)
    assert [float(v) for v in params["landmarks"].split(",")] == landmarks
    assert float(params["zscore_mean"]) == mean and float(params["zscore_std"]) == std
    assert params["ctr_model"] == f"deepseg_ctr_{ctr}_net" and params["lesion_model"] == f"deepseg_lesion_{contrast}_net"
    assert params["orientation"] == "RPI" and float(params["threshold"]) == 0.1


def test_network_entries_batch_dynamically() -> None:
    for network in ("t2s_lesion", "t2_ctr"):
        config = read_config(COMMITTED / network_model(network) / "config.pbtxt")
        assert config.max_batch_size > 1 and config.HasField("dynamic_batching")
        assert [t.name for t in config.input] == ["input_1"] and [t.name for t in config.output] == ["predictions"]


def test_every_side_knows_the_same_contrasts() -> None:
    from lesionseg.core.catalogue import LEGACY_CONTRASTS
    from lesionseg.server.pipelines.legacy import CONTRASTS

    assert tuple(CONTRASTS) == LEGACY_CONTRASTS
