"""Benchmark: what one `lesionseg` process costs beyond the server's own work — a researcher's loop
that runs one command per subject against a warm server.

For each code version (`--code NAME=DIR`: a checkout whose `core/ client/ server/ export/` are
imported instead of the installed ones; default: the installed code), in one run against one warm
embedded server serving `deepseg_lesion_t2s`:

- import time: `python -X importtime` of the whole command (every import it makes, lazy ones
  included): each module's own time, in total and summed by top-level package (the heaviest);
- per-image overhead: the wall time of `lesionseg deepseg-lesion -i IMG -c t2s` (a fresh process
  per image) minus the server's own time for that request (Triton's statistics for the model:
  success time per request), median over the images and repeats. The versions alternate, image
  by image, so a drift of the machine touches them alike.

    .venv/bin/python bench/startup.py [--code before=/tmp/before] [--images 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import checkouts  # noqa: E402  (bench/ is not a package)

MODEL = "deepseg_lesion_t2s"
IMAGES = ("sct_testing_data/t2s/t2s.nii.gz", "sct_testing_data/t2s/t2s_uncropped.nii.gz")
_IMPORT_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)")


def import_times(stderr: str) -> tuple[float, list[tuple[float, str]]]:
    """(seconds of every import, [(seconds, package)] heaviest first) of `-X importtime` output:
    each module's own time, summed by its top-level package."""
    packages: dict[str, float] = {}
    for line in stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match:
            name = match.group(4).split(".")[0]
            packages[name] = packages.get(name, 0.0) + int(match.group(1)) / 1e6
    return sum(packages.values()), sorted(((s, n) for n, s in packages.items()), reverse=True)


def server_seconds(url: str) -> tuple[int, float]:
    """(requests, seconds) Triton counts as successful for MODEL so far."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics(MODEL).model_stats
        success = stats[0].inference_stats.success
        return int(success.count), success.ns / 1e9
    finally:
        client.close()


def run_once(image: Path, out: Path, url: str, env: dict[str, str], *, importtime: bool = False) -> tuple[float, float, str]:
    """(wall seconds, server seconds, stderr) of one `lesionseg deepseg-lesion` process."""
    before = server_seconds(url)
    command = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "lesionseg.client.cli", "-q",
               "deepseg-lesion", "-i", str(image), "-c", "t2s", "-ofolder", str(out), "--overwrite", "-url", url]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    after = server_seconds(url)
    if after[0] - before[0] != 1:
        raise SystemExit(f"expected one request on {MODEL}, the server counted {after[0] - before[0]}")
    return wall, after[1] - before[1], done.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--code", action="append", default=[], metavar="NAME=DIR",
                        help="a checkout to measure (repeatable); the installed code is always measured as 'installed'")
    parser.add_argument("--images", type=int, default=8, help="images per version and repeat (default 8)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from lesionseg.export.legacy import export_sct_legacy
    from lesionseg.server.backend.runtimes import cpu_description
    from lesionseg.server.launch.embedded import EmbeddedServer, ServerSettings, free_ports

    with tempfile.TemporaryDirectory(prefix="lesionseg-startup-") as tmp:
        work = Path(tmp)
        versions: dict[str, dict[str, str]] = {"installed": checkouts.environment(None, work / "installed")}
        for name, folder in checkouts.parse(args.code).items():
            versions[name] = checkouts.environment(folder, work / name)
        models = work / "models"
        models.mkdir()
        for sub in ("deepseg_lesion", "deepseg_sc"):
            for file in (args.shared / "sct_models" / sub).glob("t2s_*.h5"):
                (models / file.name).symlink_to(file)
        repo = work / "repo"
        export_sct_legacy(models, repo, contrast="t2s")
        images = []
        for i in range(args.images):
            source = args.shared / IMAGES[i % len(IMAGES)]
            target = work / "images" / f"sub-{i:02d}_{source.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
            images.append(target)
        grpc, http, metrics = free_ports(3)
        settings = ServerSettings(repository=repo, grpc_port=grpc, http_port=http, metrics_port=metrics)
        overhead: dict[str, list[float]] = {name: [] for name in versions}
        server: dict[str, list[float]] = {name: [] for name in versions}
        imports: dict[str, tuple[float, list]] = {}
        with EmbeddedServer(settings):
            url = settings.grpc_url
            for name, env in versions.items():  # warm-up, and the import profile of each version
                run_once(images[0], work / "out" / name, url, env)
                imports[name] = import_times(run_once(images[0], work / "out" / name, url, env, importtime=True)[2])
            for _ in range(args.repeats):
                for image in images:
                    for name, env in versions.items():
                        wall, served, _ = run_once(image, work / "out" / name, url, env)
                        overhead[name].append(wall - served)
                        server[name].append(served)

    print(f"one lesionseg process per image against a warm server ({MODEL}), {args.images} images x {args.repeats} "
          f"repeats, on {cpu_description()}")
    print(f"{'code':12} {'imports s':>9} {'server s':>9} {'overhead s':>10}  heaviest imports")
    for name in versions:
        total, heaviest = imports[name]
        top = ", ".join(f"{package} {seconds:.2f}" for seconds, package in heaviest[:6])
        print(f"{name:12} {total:9.2f} {statistics.median(server[name]):9.2f} {statistics.median(overhead[name]):10.2f}  {top}")
    names = list(versions)
    for other in names[1:]:
        print(f"overhead {other} / {names[0]} = {statistics.median(overhead[other]) / statistics.median(overhead[names[0]]):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
