"""Keras .h5 -> ONNX converter: parity with real Keras outputs, and refusal of what it cannot convert."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lesionseg.core.errors import ExportError, InputError
from lesionseg.export.keras_lambda import lambda_divisor
from lesionseg.export.keras_onnx import convert_keras_h5

MODELS = {
    "t2_ctr": "deepseg_sc", "t2s_ctr": "deepseg_sc", "dwi_ctr": "deepseg_sc",
    "t2s_lesion": "deepseg_lesion", "t2_ax_lesion": "deepseg_lesion",
}
TOLERANCE = 1e-3  # max abs difference of logits, as the issue states


def run(model, x: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input_1": x})))


@pytest.mark.realdata
@pytest.mark.parametrize("name", sorted(MODELS))
def test_parity_with_keras_golden_outputs(shared: Path, name: str) -> None:
    golden = np.load(shared / "sct_models" / "golden" / f"{name}.npz")
    model = convert_keras_h5(shared / "sct_models" / MODELS[name] / f"{name}.h5", with_logits=True)
    out = run(model, golden["x"])
    assert out["logits"].shape == golden["logits"].shape
    diff = float(np.abs(out["logits"] - golden["logits"]).max())
    print(f"{name}: max abs logits difference {diff:.3g} (tolerance {TOLERANCE})")
    assert diff <= TOLERANCE
    np.testing.assert_allclose(out["predictions"], golden["y"], atol=1e-5)


def _keras_file(path: Path, layers: list[dict], weights: dict[str, dict[str, np.ndarray]] | None = None) -> Path:
    import h5py

    config = {"class_name": "Model", "config": {"name": "m", "layers": layers,
              "input_layers": [[layers[0]["name"], 0, 0]], "output_layers": [[layers[-1]["name"], 0, 0]]}}
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config).encode()
        group = f.create_group("model_weights")
        for layer, arrays in (weights or {}).items():
            g = group.create_group(layer)
            g.attrs["weight_names"] = [f"{layer}/{k}:0".encode() for k in arrays]
            for k, v in arrays.items():
                g[f"{layer}/{k}:0"] = v
    return path


def _input(shape: list[int | None]) -> dict:
    return {"class_name": "InputLayer", "name": "input_1", "config": {"batch_input_shape": shape, "name": "input_1"}, "inbound_nodes": []}


def test_small_network_matches_numpy(tmp_path: Path) -> None:
    """A channels_last conv + sigmoid network built here, checked against a direct numpy computation."""
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal((1, 1, 2, 3)).astype(np.float32)  # 1x1 conv: 2 -> 3 channels
    bias = rng.standard_normal(3).astype(np.float32)
    layers = [
        _input([None, 4, 5, 2]),
        {"class_name": "Conv2D", "name": "conv", "inbound_nodes": [[["input_1", 0, 0, {}]]],
         "config": {"kernel_size": [1, 1], "padding": "same", "strides": [1, 1], "dilation_rate": [1, 1],
                    "activation": "linear", "use_bias": True, "data_format": "channels_last", "filters": 3}},
        {"class_name": "Activation", "name": "act", "config": {"activation": "sigmoid"}, "inbound_nodes": [[["conv", 0, 0, {}]]]},
    ]
    path = _keras_file(tmp_path / "m.h5", layers, {"conv": {"kernel": kernel, "bias": bias}})
    x = rng.standard_normal((2, 4, 5, 2)).astype(np.float32)
    out = run(convert_keras_h5(path, with_logits=True), x)
    logits = x @ kernel[0, 0] + bias
    np.testing.assert_allclose(out["logits"], logits, atol=1e-5)
    np.testing.assert_allclose(out["predictions"], 1 / (1 + np.exp(-logits)), atol=1e-6)


def test_unknown_layer_is_refused(tmp_path: Path) -> None:
    layers = [_input([None, 8, 1]), {"class_name": "LSTM", "name": "lstm_1", "config": {}, "inbound_nodes": [[["input_1", 0, 0, {}]]]}]
    path = _keras_file(tmp_path / "m.h5", layers)
    with pytest.raises(ExportError, match=r"layer 'lstm_1' \(LSTM\): this layer type is not supported"):
        convert_keras_h5(path)


def test_not_a_keras_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        convert_keras_h5(tmp_path / "missing.h5")
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    with pytest.raises(InputError, match="not a readable HDF5 file"):
        convert_keras_h5(bad)


@pytest.mark.realdata
def test_only_the_temperature_lambda_is_accepted(shared: Path) -> None:
    import h5py

    with h5py.File(shared / "sct_models" / "deepseg_sc" / "t2_ctr.h5") as f:
        layers = json.loads(f.attrs["model_config"])["config"]["layers"]
    config = next(layer for layer in layers if layer["class_name"] == "Lambda")["config"]
    assert lambda_divisor("lambda_1", config, source="t2_ctr.h5") == 1.0
    body = config["function"][0]
    # z * temperature: BINARY_MULTIPLY (0x14) instead of BINARY_DIVIDE (0x1b)
    multiply = dict(config, function=[body.replace("\x1bS", "\x14S"), None, [1.0]])
    with pytest.raises(ExportError, match="is not 'lambda z: z / temperature'; refusing unknown code"):
        lambda_divisor("lambda_1", multiply, source="t2_ctr.h5")
    with pytest.raises(ExportError, match="refusing unknown code"):
        lambda_divisor("lambda_1", dict(config, function=["garbage", None, [1.0]]), source="x.h5")
    with pytest.raises(ExportError, match="divides by 0.0"):
        lambda_divisor("lambda_1", dict(config, function=[body, None, [0.0]]), source="x.h5")
    assert lambda_divisor("lambda_1", dict(config, function=[body, None, [2.5]]), source="x.h5") == 2.5
