"""`lesionseg export sct-legacy`: SCT's legacy lesion and centerline networks into a repository.

Reads each network from a Keras 2 `.h5` file (converted here, see `keras_onnx`) or from SCT's
already-converted `.onnx` file (input `input_1`, output `predictions`), checks it, measures parity
where golden outputs exist, and writes the network entries plus the `deepseg_lesion_<contrast>`
pipeline entry that clients call.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from lesionseg.core.errors import ExportError, InputError, ModelNotFoundError, UsageError
from lesionseg.core.files import sha256
from lesionseg.core.paths import user_path
from lesionseg.export.keras_onnx import LOGITS_NAME, convert_keras_h5
from lesionseg.export.legacy_precision import legacy_report
from lesionseg.export.networks import Serving, write_network
from lesionseg.export.parity import ParityReport
from lesionseg.export.precision import ParityOptions
from lesionseg.server.pipelines.legacy import CONTRASTS
from lesionseg.server.repository.legacy import (
    EXTRA_CENTERLINE,
    INPUT_NAME,
    OUTPUT_NAME,
    network_entry,
    networks_of,
    write_pipeline,
)

logger = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-3  # max abs difference of logits vs Keras golden outputs


def find_network(models_dir: Path, network: str) -> Path | None:
    """The `.h5` or `.onnx` file of `network` under `models_dir` (searched 3 levels deep; .h5 first).

    Knows SCT's layouts: `deepseg_lesion/`, `deepseg_sc/`, `data/deepseg_lesion_models/`,
    `data/deepseg_sc_models/`, the ONNX release zips' flat folders.
    """
    for suffix in (".h5", ".onnx"):
        for depth in ("", "*/", "*/*/", "*/*/*/"):
            found = sorted(models_dir.glob(f"{depth}{network}{suffix}"))
            if found:
                return found[0]
    return None


def _golden(models_dir: Path, golden_dir: Path | None, network: str) -> Path | None:
    for folder in (golden_dir, models_dir / "golden"):
        if folder is not None and (folder / f"{network}.npz").is_file():
            return folder / f"{network}.npz"
    return None


def _session(model: Any) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def load_network(path: Path, network: str, *, golden: Path | None) -> tuple[Any, dict[str, Any]]:
    """Convert or load one network and measure its parity.

    Returns:
        (onnx.ModelProto with input `input_1` and output `predictions`, record for export.json)
    """
    import onnx

    record: dict[str, Any] = {"network": network, "source": str(user_path(path)), "source_sha256": sha256(path)}
    dims = network_entry(network).input_dims
    if path.suffix == ".h5":
        model = convert_keras_h5(path, with_logits=True)
        record["source_format"] = "keras-h5"
    else:
        try:
            model = onnx.load(str(path))
            onnx.checker.check_model(model)
        except Exception as exc:  # noqa: BLE001 - onnx raises several types for bad files
            raise InputError(f"{path}: not a valid ONNX model ({str(exc).splitlines()[0]})") from None
        inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
        outputs = [o.name for o in model.graph.output]
        if inputs != [INPUT_NAME] or OUTPUT_NAME not in outputs:
            raise ExportError(f"{path}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, found {inputs} -> {outputs}")
        record["source_format"] = "onnx"
    session = _session(model)
    probe = np.random.default_rng(0).standard_normal((2, *dims)).astype(np.float32)
    try:
        shapes = [o.shape for o in session.run(None, {INPUT_NAME: probe})]
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"{path}: does not run on a {list(probe.shape)} input: {str(exc).splitlines()[0]}") from None
    if tuple(shapes[0]) != probe.shape:
        raise ExportError(f"{path}: output shape {shapes[0]} differs from input shape {list(probe.shape)}")
    if golden is not None:
        data = np.load(golden)
        outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {INPUT_NAME: data["x"].astype(np.float32)})))
        if LOGITS_NAME in outputs:
            diff = float(np.abs(outputs[LOGITS_NAME] - data["logits"]).max())
            record["parity"] = {"reference": str(golden), "compared": "logits", "max_abs_diff": diff, "tolerance": PARITY_TOLERANCE}
        else:
            diff = float(np.abs(outputs[OUTPUT_NAME] - data["y"]).max())
            record["parity"] = {"reference": str(golden), "compared": "predictions", "max_abs_diff": diff, "tolerance": PARITY_TOLERANCE}
        if diff > PARITY_TOLERANCE:
            raise ExportError(f"{path}: parity with {golden} failed: max abs difference {diff:.3g} > {PARITY_TOLERANCE}")
        logger.info("%s: parity with Keras golden outputs: max abs %s diff %.3g", network, record["parity"]["compared"], diff)
    else:
        record["parity"] = None
    if LOGITS_NAME in [o.name for o in model.graph.output]:
        model = _without_output(model, LOGITS_NAME)
    return model, record


def _without_output(model: Any, name: str) -> Any:
    """A copy of `model` whose graph no longer outputs `name` (the node computing it is dropped)."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    keep = [o for o in model.graph.output if o.name != name]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    nodes = [n for n in model.graph.node if name not in n.output]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportResult:
    contrasts: tuple[str, ...]
    networks: dict[str, dict[str, Any]]
    skipped: tuple[str, ...]
    reports: dict[str, ParityReport] = dataclasses.field(default_factory=dict)  # reduced network -> its report


def select_contrasts(contrast: str) -> list[str]:
    if contrast == "all":
        return list(CONTRASTS)
    if contrast not in CONTRASTS:
        raise UsageError(f"unknown contrast {contrast!r} (choose from {', '.join(CONTRASTS)}, all)")
    return [contrast]


def export_sct_legacy(
    models_dir: Path, repository: Path, *, contrast: str = "all", serving: Serving | None = None,
    golden_dir: Path | None = None, parity: ParityOptions | None = None,
) -> ExportResult:
    """Export the legacy pipeline(s) for `contrast` ("t2", "t2_ax", "t2s" or "all").

    With "all", contrasts whose lesion model is absent are skipped (and reported); with one
    contrast, a missing model is an error naming what was looked for. A reduced
    `serving.precision` is computed first, the parity report of each contrast's pipeline on the
    real images of `parity` (`lesionseg.export.legacy_precision`); if any fails, nothing is
    written and the error gives the failing numbers in one line.
    """
    serving = serving or Serving()
    parity = parity or ParityOptions()
    parity.check(serving.precision)
    if not models_dir.is_dir():
        raise InputError(f"{models_dir}: models folder does not exist")
    wanted = select_contrasts(contrast)
    chosen, skipped, lacking = [], [], []
    for name in wanted:
        missing = [n for n in networks_of(name) if find_network(models_dir, n) is None]
        if missing:
            if contrast != "all":
                raise ModelNotFoundError(
                    f"{models_dir}: no {' or '.join(missing)} model for contrast {name} "
                    f"(looked for {', '.join(f'{m}.h5/.onnx' for m in missing)})")
            skipped.append(name)
            lacking.append(f"{name} lacks {' and '.join(missing)}")
            continue
        chosen.append(name)
    if not chosen:
        raise ModelNotFoundError(f"{models_dir}: no complete legacy pipeline ({'; '.join(lacking)})")
    networks = sorted({n for c in chosen for n in networks_of(c)} | {n for n in EXTRA_CENTERLINE if find_network(models_dir, n)})
    records: dict[str, dict[str, Any]] = {}
    models: dict[str, Any] = {}
    for network in networks:
        path = find_network(models_dir, network)
        assert path is not None  # noqa: S101 - checked above
        models[network], records[network] = load_network(path, network, golden=_golden(models_dir, golden_dir, network))
    reduced: dict[str, tuple[Any, ParityReport]] = {}  # lesion network -> (its candidate graph, its report)
    if serving.precision != "fp32":
        failures = []
        with tempfile.TemporaryDirectory(prefix="lesionseg-parity-") as tmp:
            for name in chosen:
                report, candidate = legacy_report(name, models, serving.precision, parity, Path(tmp) / name)
                if report.passed:
                    reduced[networks_of(name)[0]] = (candidate.model, report)
                else:
                    failures.append(f"{name}: {report.failure_line()}")
        if failures:
            raise ExportError(f"{models_dir}: not written: " + " | ".join(failures))
    repository.mkdir(parents=True, exist_ok=True)
    for network in networks:
        model, report = reduced.get(network, (models[network], None))
        write_network(network_entry(network), model, repository, serving=serving, record=records[network], report=report)
    for name in chosen:
        write_pipeline(repository, name)
    return ExportResult(contrasts=tuple(chosen), networks=records, skipped=tuple(skipped),
                        reports={network: report for network, (_, report) in reduced.items()})
