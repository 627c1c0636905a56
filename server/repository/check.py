"""Static checks of a Triton model repository (`lesionseg repository check DIR`).

Every problem is collected, not just the first: a repository with three broken models gets three
lines. Checks: each `config.pbtxt` parses with `model_config_pb2`; its name matches the folder;
numeric version folders exist and hold the file the backend needs (and, for Python-backend
models, the file their `weights` parameter names); ensemble steps reference
models that exist, map existing tensor names, and connect tensors of the same data type; GPU
execution accelerators use only the keys and values Triton's onnxruntime backend accepts.

A repository may hold variants, `<model>/configs/<name>.pbtxt`, that `tritonserver
--model-config-name=<name>` takes instead of `config.pbtxt` (`lesionseg.server.repository.gpu`).
Each variant is checked as that server sees the repository: the variant where a model has one,
`config.pbtxt` elsewhere, so an ensemble that reaches a GPU network is checked against it too.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from lesionseg.server.repository.gpu import accelerator_problems
from lesionseg.server.repository.modelconfig import CONFIG_NAME, VARIANTS_DIR, config_path, data_type_name, read_config

#: The file a version folder must hold, per backend or platform.
MODEL_FILES = {
    "python": "model.py",
    "onnxruntime": "model.onnx",
    "onnxruntime_onnx": "model.onnx",
    "tensorrt": "model.plan",
    "tensorrt_plan": "model.plan",
    "pytorch": "model.pt",
    "pytorch_libtorch": "model.pt",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Problem:
    """One thing wrong with one model of the repository."""

    model: str
    message: str

    def __str__(self) -> str:
        return f"{self.model}: {self.message}"


def _model_folders(repository: Path) -> list[Path]:
    return sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def variants(repository: Path) -> list[str]:
    """The config variant names (`configs/<name>.pbtxt`) any model of `repository` has, sorted."""
    return sorted({path.stem for folder in _model_folders(repository) for path in (folder / VARIANTS_DIR).glob("*.pbtxt")})


def load_configs(repository: Path, variant: str | None = None) -> tuple[dict[str, mc.ModelConfig], list[Problem]]:
    """Parse every model folder's config as a server with `--model-config-name=<variant>` would
    (None: `config.pbtxt` only); returns the configs that parsed and the problems. A problem in a
    variant file is named after it (`configs/gpu.pbtxt: ...`)."""
    configs: dict[str, mc.ModelConfig] = {}
    problems: list[Problem] = []
    for folder in _model_folders(repository):
        path = config_path(repository, folder.name, variant)
        if variant is None or not path.is_file():
            path = folder / CONFIG_NAME
        where = "" if path.name == CONFIG_NAME else f"{VARIANTS_DIR}/{path.name}: "
        if not path.is_file():
            problems.append(Problem(model=folder.name, message=f"no {CONFIG_NAME}"))
            continue
        try:
            config = read_config(path)
        except ValueError as exc:
            problems.append(Problem(model=folder.name, message=f"invalid {where or CONFIG_NAME + ': '}{exc}"))
            continue
        if config.name and config.name != folder.name:
            problems.append(Problem(model=folder.name, message=f"{where}config name {config.name!r} does not match its folder"))
        problems.extend(Problem(model=folder.name, message=where + message) for message in accelerator_problems(config))
        configs[folder.name] = config
    return configs, problems


def _kind(config: mc.ModelConfig) -> str:
    return config.platform or config.backend


def _check_files(name: str, config: mc.ModelConfig, folder: Path) -> list[Problem]:
    problems: list[Problem] = []
    versions = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
    if not versions:
        return [Problem(model=name, message="no numeric version folder (e.g. 1/)")]
    kind = _kind(config)
    if not kind:
        problems.append(Problem(model=name, message="neither backend nor platform is set"))
        return problems
    if kind == "ensemble":
        return problems
    filenames = [config.default_model_filename or MODEL_FILES.get(kind)]
    if "weights" in config.parameters:  # Python-backend models name the weights they load
        filenames.append(config.parameters["weights"].string_value)
    for version in versions:
        for filename in filenames:
            if filename and not (version / filename).exists():
                problems.append(Problem(model=name, message=f"version {version.name} lacks {filename}"))
    return problems


def _check_ensemble(name: str, config: mc.ModelConfig, configs: dict[str, mc.ModelConfig]) -> list[Problem]:
    problems: list[Problem] = []
    steps = config.ensemble_scheduling.step
    if config.platform == "ensemble" and not steps:
        return [Problem(model=name, message="ensemble has no steps")]
    if steps and config.platform != "ensemble":
        return [Problem(model=name, message="ensemble_scheduling given but platform is not 'ensemble'")]
    # tensor name -> data type, starting with the ensemble's inputs, growing with step outputs
    available: dict[str, int | None] = {t.name: t.data_type for t in config.input}
    produced: set[str] = set()
    for index, step in enumerate(steps, start=1):
        where = f"step {index} ({step.model_name})"
        target = configs.get(step.model_name)
        if target is None:
            problems.append(Problem(model=name, message=f"{where}: model {step.model_name!r} is not in the repository"))
            for tensor in step.output_map.values():  # known to exist, type unknown: no cascade of errors
                available[tensor] = None
                produced.add(tensor)
            continue
        target_inputs = {t.name: t.data_type for t in target.input}
        target_outputs = {t.name: t.data_type for t in target.output}
        for model_input, tensor in step.input_map.items():
            if model_input not in target_inputs:
                problems.append(Problem(model=name, message=f"{where}: {step.model_name} has no input {model_input!r}"))
            elif tensor not in available:
                problems.append(Problem(model=name, message=f"{where}: tensor {tensor!r} is neither an ensemble input nor an earlier step's output"))
            elif available[tensor] is not None and available[tensor] != target_inputs[model_input]:
                problems.append(Problem(model=name, message=(
                    f"{where}: tensor {tensor!r} is {data_type_name(available[tensor])} but "
                    f"{step.model_name} input {model_input!r} is {data_type_name(target_inputs[model_input])}")))
        missing = [t for t, opt in ((t.name, t.optional) for t in target.input) if t not in step.input_map and not opt]
        for tensor in missing:
            problems.append(Problem(model=name, message=f"{where}: required input {tensor!r} of {step.model_name} is not mapped"))
        for model_output, tensor in step.output_map.items():
            if model_output not in target_outputs:
                problems.append(Problem(model=name, message=f"{where}: {step.model_name} has no output {model_output!r}"))
                continue
            available[tensor] = target_outputs[model_output]
            produced.add(tensor)
    for output in config.output:
        if output.name not in produced:
            problems.append(Problem(model=name, message=f"ensemble output {output.name!r} is produced by no step"))
        elif available[output.name] is not None and available[output.name] != output.data_type:
            problems.append(Problem(model=name, message=(
                f"ensemble output {output.name!r} is declared {data_type_name(output.data_type)} but its step "
                f"produces {data_type_name(available[output.name])}")))
    return problems


def check_repository(repository: Path) -> list[Problem]:
    """All problems found in the repository at `repository` (empty list: it looks servable).

    A missing or non-directory path is a single problem named after the path.
    """
    if not repository.exists():
        return [Problem(model=str(repository), message="repository does not exist")]
    if not repository.is_dir():
        return [Problem(model=str(repository), message="repository is not a directory")]
    problems: list[Problem] = []
    for variant in (None, *variants(repository)):
        configs, found = load_configs(repository, variant)
        if not configs and not found:
            found.append(Problem(model=str(repository), message="repository holds no model"))
        for name, config in configs.items():
            where = f"{VARIANTS_DIR}/{variant}.pbtxt: " if variant and config_path(repository, name, variant).is_file() else ""
            found.extend(Problem(model=p.model, message=where + p.message) for p in _check_files(name, config, repository / name))
            if config.platform == "ensemble" or config.ensemble_scheduling.step:
                label = f" (with --model-config-name={variant})" if variant else ""
                found.extend(Problem(model=p.model, message=p.message + label) for p in _check_ensemble(name, config, configs)
                             if p not in problems)
        problems.extend(p for p in found if p not in problems)
    return problems
