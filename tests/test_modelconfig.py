"""Config generation through model_config_pb2, checked against golden files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import selftest_repo
from tritonclient.grpc import model_config_pb2 as mc

from lesionseg.server.backend.selftest import ScaleModel
from lesionseg.server.repository.modelconfig import (
    DynamicBatching,
    ModelSpec,
    TensorSpec,
    data_type,
    data_type_name,
    parameters,
    parse_config,
    to_proto,
    to_text,
    write_config,
)
from lesionseg.server.repository.pymodel import model_source, write_model_py

GOLDEN = Path(__file__).parent / "golden"

NET = ModelSpec(
    name="example_net",
    backend="onnxruntime",
    max_batch_size=8,
    inputs=[TensorSpec(name="input_1", dtype="FP32", dims=(1, 48, 48, 48))],
    outputs=[TensorSpec(name="predictions", dtype=np.float32, dims=(1, 48, 48, 48))],
    instance_count=2,
    dynamic_batching=DynamicBatching(max_queue_delay_us=2000, preferred_batch_sizes=(4, 8)),
    parameters={"zscore_mean": "871.309", "zscore_std": "557.916"},
)


def test_network_config_matches_golden_file() -> None:
    assert to_text(to_proto(NET)) == (GOLDEN / "example_net.pbtxt").read_text()


def test_selftest_repository_is_what_its_specs_generate(tmp_path: Path) -> None:
    selftest_repo.write(tmp_path)
    committed = selftest_repo.REPOSITORY
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated == sorted(p.relative_to(committed) for p in committed.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for rel in generated:
        assert (tmp_path / rel).read_text() == (committed / rel).read_text(), rel


def test_round_trip_through_text() -> None:
    config = parse_config(to_text(to_proto(NET)))
    assert config.name == "example_net"
    assert config.max_batch_size == 8
    assert list(config.input[0].dims) == [1, 48, 48, 48]
    assert config.input[0].data_type == mc.TYPE_FP32
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert parameters(config) == {"zscore_mean": "871.309", "zscore_std": "557.916"}


@pytest.mark.parametrize(
    ("value", "name"),
    [("FP32", "FP32"), ("TYPE_UINT8", "UINT8"), (np.uint8, "UINT8"), (np.dtype("int16"), "INT16"), ("float64", "FP64")],
)
def test_data_types(value: object, name: str) -> None:
    assert data_type_name(data_type(value)) == name  # type: ignore[arg-type]


def test_unknown_data_type() -> None:
    with pytest.raises(ValueError, match="unknown Triton data type"):
        data_type("FP33")


def test_garbage_config_names_source_and_position() -> None:
    with pytest.raises(ValueError, match=r"^m/config.pbtxt: 2:.*"):
        parse_config('name: "m"\nbackend python {', source="m/config.pbtxt")


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="ensemble steps"):
        ModelSpec(name="e", platform="ensemble", inputs=[], outputs=[])
    with pytest.raises(ValueError, match="backend or a platform"):
        ModelSpec(name="e", inputs=[], outputs=[])


def test_write_config_and_model_py(tmp_path: Path) -> None:
    path = write_config(NET, tmp_path)
    assert path == tmp_path / "example_net" / "config.pbtxt"
    assert parse_config(path.read_text()) == to_proto(NET)
    model_py = write_model_py(tmp_path, "scale", ScaleModel)
    namespace: dict[str, object] = {}
    exec(compile(model_py.read_text(), str(model_py), "exec"), namespace)  # noqa: S102 - our own file
    assert namespace["TritonPythonModel"].__name__ == "ScaleModel"  # type: ignore[attr-defined]

    class Local(ScaleModel):  # not importable by name: Triton could not load it
        pass

    with pytest.raises(ValueError, match="cannot be imported"):
        write_model_py(tmp_path, "bad", Local)
    with pytest.raises(ValueError, match="not a Python-backend model class"):
        model_source("bad", dict)
