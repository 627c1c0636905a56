"""gRPC client -> ensemble -> Python-backend models -> response, on the real embedded Triton."""

from __future__ import annotations

import concurrent.futures

import numpy as np
import pytest

from lesionseg.client.cli import main

pytestmark = pytest.mark.server


def infer(url: str, values: np.ndarray) -> dict[str, np.ndarray]:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as client:
        tensor = grpcclient.InferInput("X", list(values.shape), "FP32")
        tensor.set_data_from_numpy(values)
        result = client.infer("selftest", [tensor])
        return {"Y": result.as_numpy("Y"), "TOTAL": result.as_numpy("TOTAL")}


def test_ensemble_chain(server) -> None:
    out = infer(server.settings.grpc_url, np.array([1.5, -2.0, 4.0], np.float32))
    np.testing.assert_array_equal(out["Y"], np.array([3.0, -4.0, 8.0], np.float32))  # factor 2 from the config
    np.testing.assert_array_equal(out["TOTAL"], np.array([7.0], np.float32))


@pytest.mark.parametrize(
    ("values", "message"),
    [(np.array([1.0, np.nan], np.float32), "X contains NaN or infinite values"), (np.zeros(0, np.float32), "X is empty")],
)
def test_bad_input_gets_its_own_error_and_server_stays_healthy(server, values: np.ndarray, message: str) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    url = server.settings.grpc_url
    with pytest.raises(InferenceServerException, match=f"selftest_scale: {message}"):
        infer(url, values)
    with grpcclient.InferenceServerClient(url) as client:
        assert client.is_server_ready()
        assert client.is_model_ready("selftest")
    assert infer(url, np.ones(4, np.float32))["TOTAL"][0] == 8.0


def test_concurrent_good_and_bad_requests(server) -> None:
    url = server.settings.grpc_url
    inputs = [np.full(n + 1, n, np.float32) if n % 3 else np.array([np.inf], np.float32) for n in range(24)]

    def one(values: np.ndarray) -> float | str:
        try:
            return float(infer(url, values)["TOTAL"][0])
        except Exception as exc:  # noqa: BLE001
            return str(exc)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, inputs))
    for n, result in enumerate(results):
        if n % 3:
            assert result == 2.0 * n * (n + 1)
        else:
            assert "NaN or infinite" in str(result)


def test_status_reports_every_model(server, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--url", server.settings.grpc_url]) == 0
    out = capsys.readouterr().out
    assert f"server {server.settings.grpc_url}: live, ready (Triton 2.51.0)" in out
    for model in ("selftest", "selftest_scale", "selftest_sum"):
        assert any(line.split()[:3] == [model, "1", "READY"] for line in out.splitlines()), out


def test_status_json(server, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["status", "--url", server.settings.grpc_url, "--json"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert state["ready"] is True
    assert {m["name"]: m["state"] for m in state["models"]}["selftest"] == "READY"
