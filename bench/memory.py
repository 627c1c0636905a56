"""Benchmark: the server's peak memory and cohort throughput with the networks' memory settings
against the settings before them, measured in one run.

Two cases, each one repository exported in this run and served twice by a fresh embedded server:

  nnunet  the bench/cohort.py nnU-Net case: the seg_ms_lesion-sized random-weight model
          (`tests/synthetic_nnunet.py`'s REALISTIC, task 'bench'), a cohort of N variants
          of t2_fake_lesion.nii.gz.
  legacy  every legacy contrast with real weights loaded together (`export sct-legacy --contrast
          all` from ../shared/sct_models: t2s and t2_ax; the sagittal t2 weights are not there),
          a t2s cohort and then a t2_ax cohort of N variants each on the same server.

Settings:

  before  the repository as export wrote it before these settings: every network config rewritten (through
          model_config_pb2, weights linked) to two instances at one intra-op thread, ONNX
          Runtime's memory pattern on, the whole batch the dynamic batcher forms run at once.
  now     the configs as exported (`lesionseg.server.repository.networks`: one instance at two
          threads, memory pattern off, one item at a time).

Per run: the server is started (inside a fresh memory cgroup where one can be made) and warmed with
one subject, then ONE `lesionseg` CLI process runs the cohort (`--jobs 2`), timed from spawn to exit.
Printed: seconds, subjects/min, the server's peaks (bench/server_memory.py: the cgroup's, the
largest summed PSS, summed VmHWM), now/before ratios, and mask voxels that differ between the two.
The settings alternate (before, now, before, now, ...) `--repeats` times; each line is one run.

    .venv/bin/python bench/memory.py [--n 16] [--cases nnunet,legacy] [--repeats 1] [--shared ../shared]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cohort import NNUNET_IMAGE, NNUNET_TASK, ROOT, make_cohort, mask_difference, run_batch, server_settings  # noqa: E402
from server_memory import Peaks, measured_server  # noqa: E402

SETTINGS = ("before", "now")
LEGACY_COHORTS = (("t2s", "sct_testing_data/t2s/t2s.nii.gz", "T2star"), ("t2_ax", "sct_testing_data/t2/t2_fake_lesion.nii.gz", "T2w"))


@dataclasses.dataclass
class Run:
    setting: str
    seconds: float
    peaks: Peaks
    masks: list[Path]


@dataclasses.dataclass
class Job:
    """One CLI invocation on one cohort: its argv head (before -ofolder) and how to find its masks."""

    argv: list[str]
    images: list[Path]
    cohort: Path
    masks: object  # (images, cohort, ofolder) -> list[Path]


def nnunet_case(args: argparse.Namespace, tmp: Path) -> tuple[Path, list[Job], str]:
    from lesionseg.client.task import output_paths
    from lesionseg.export.nnunet import export_nnunet
    from synthetic_nnunet import REALISTIC, make_model

    folder = make_model(tmp / "model", REALISTIC)
    repo = tmp / "repo"
    plan = export_nnunet(folder, repo, task=NNUNET_TASK).plan
    cohort = tmp / "cohort"
    images = make_cohort(args.shared / NNUNET_IMAGE[0], NNUNET_IMAGE[1], cohort, args.n)

    def masks(images: list[Path], cohort: Path, ofolder: Path) -> list[Path]:
        return [next(iter(output_paths(p, NNUNET_TASK, plan.labels, None, ofolder=ofolder / p.parent.relative_to(cohort)).values()))
                for p in images]

    description = (f"nnU-Net seg_ms_lesion-sized model (patch {list(plan.patch_size)}, random weights, task {NNUNET_TASK!r}), "
                   f"{args.n} variants of {Path(NNUNET_IMAGE[0]).name}")
    return repo, [Job(["deepseg", "-i", str(cohort), "-task", NNUNET_TASK], images, cohort, masks)], description


def legacy_case(args: argparse.Namespace, tmp: Path) -> tuple[Path, list[Job], str]:
    from lesionseg.client.legacy import LESION, legacy_outputs
    from lesionseg.export.legacy import export_sct_legacy

    repo = tmp / "repo"
    export_sct_legacy(args.shared / "sct_models", repo, contrast="all")

    def masks(images: list[Path], cohort: Path, ofolder: Path) -> list[Path]:
        return [legacy_outputs(p, ofolder / p.parent.relative_to(cohort))[LESION] for p in images]

    jobs = []
    for contrast, image, suffix in LEGACY_COHORTS:
        cohort = tmp / f"cohort_{contrast}"
        images = make_cohort(args.shared / image, suffix, cohort, args.n)
        jobs.append(Job(["deepseg-lesion", "-i", str(cohort), "-c", contrast], images, cohort, masks))
    models = sorted(p.name for p in repo.iterdir() if (p / "config.pbtxt").is_file())
    description = (f"legacy, every contrast with weights loaded together ({len(models)} models: {', '.join(models)}), "
                   f"{args.n} variants each of " + " then ".join(f"{Path(i).name} (-c {c})" for c, i, _ in LEGACY_COHORTS))
    return repo, jobs, description


def before_copy(source: Path, target: Path) -> Path:
    """`source` with every network config (max_batch_size > 0) as export wrote it before these settings:
    two instances, one intra-op thread, memory pattern on, no run_batch. Weights are linked."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    target.mkdir()
    for model in source.iterdir():
        if not (model / "config.pbtxt").is_file():
            continue
        shutil.copytree(model, target / model.name, ignore=lambda d, names: [n for n in names if n.endswith((".onnx", ".data"))])
        for weights in list(model.rglob("*.onnx")) + list(model.rglob("*.data")):
            (target / model.name / weights.relative_to(model)).symlink_to(weights)
        config = text_format.Parse((model / "config.pbtxt").read_text(), mc.ModelConfig())
        if config.max_batch_size > 0 and config.backend == "python":
            del config.instance_group[:]
            config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=2)
            config.parameters["intra_op_threads"].string_value = "1"
            config.parameters["ort_mem_pattern"].string_value = "1"
            config.parameters["run_batch"].string_value = "0"
            (target / model.name / "config.pbtxt").write_text(text_format.MessageToString(config))
    return target


def serve_and_run(repo: Path, jobs: list[Job], setting: str, tmp: Path, index: int) -> Run:
    settings = server_settings(repo)
    out = tmp / f"out_{setting}_{index}"
    with measured_server(settings) as served:
        seconds, masks = 0.0, []
        for j, job in enumerate(jobs):
            warm = tmp / f"warm_{setting}_{index}_{j}"
            run_batch(["-q", *job.argv[:2], str(job.images[0]), *job.argv[3:], "-ofolder", str(warm), "-url", settings.grpc_url],
                      warm.with_suffix(".log"), [])
            expected = job.masks(job.images, job.cohort, out)
            child = run_batch(["-q", *job.argv, "-ofolder", str(out), "-url", settings.grpc_url, "--jobs", "2"],
                              tmp / f"batch_{setting}_{index}_{j}.log", expected)
            seconds += child.seconds
            masks += expected
        peaks = served.peaks()
    return Run(setting=setting, seconds=seconds, peaks=peaks, masks=masks)


def report(description: str, n_subjects: int, runs: list[Run]) -> list[str]:
    lines = [description,
             f"  {'setting':8} {'seconds':>8} {'subj/min':>9} {'cgroup MiB':>11} {'PSS MiB':>8} {'VmHWM sum':>10}"]
    for r in runs:
        lines.append(f"  {r.setting:8} {r.seconds:8.1f} {n_subjects / r.seconds * 60:9.1f} {r.peaks.cgroup_mb:11.0f} "
                     f"{r.peaks.pss_mb:8.0f} {r.peaks.hwm_mb:10.0f}")
    best = {s: min((r for r in runs if r.setting == s), key=lambda r: r.seconds) for s in SETTINGS}
    worst_mem = {s: max((r for r in runs if r.setting == s), key=lambda r: r.peaks.cgroup_mb if r.peaks.cgroup_mb == r.peaks.cgroup_mb
                        else r.peaks.pss_mb) for s in SETTINGS}
    before, now = best["before"], best["now"]
    lines.append(f"  throughput now/before = {before.seconds / now.seconds:.2f} (fastest run of each)")
    mb, mn = worst_mem["before"].peaks, worst_mem["now"].peaks
    lines.append(f"  peak now/before = cgroup {mn.cgroup_mb / mb.cgroup_mb:.2f}, PSS {mn.pss_mb / mb.pss_mb:.2f}, "
                 f"VmHWM sum {mn.hwm_mb / mb.hwm_mb:.2f} (largest run of each)")
    diff, total = mask_difference(before.masks, now.masks)
    lines.append(f"  masks now vs before: {diff} of {total} voxels differ")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=16, help="subjects per cohort (default 16)")
    parser.add_argument("--cases", default="nnunet,legacy", help="comma-separated: nnunet, legacy (default both)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each setting, alternating (default 1)")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="folder with sct_models/ and sct_testing_data/")
    args = parser.parse_args()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if not cases or set(cases) - {"nnunet", "legacy"}:
        parser.error("--cases: choose from nnunet, legacy")
    if args.n < 1 or args.repeats < 1:
        parser.error("--n and --repeats must be at least 1")
    print(f"server memory benchmark: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M:%S %Z}, {cpus} CPUs, N = {args.n}, lesionseg --jobs 2", flush=True)
    for case in cases:
        with tempfile.TemporaryDirectory(prefix=f"lesionseg-memory-{case}-") as name:
            tmp = Path(name)
            repo, jobs, description = (nnunet_case if case == "nnunet" else legacy_case)(args, tmp)
            repos = {"before": before_copy(repo, tmp / "repo_before"), "now": repo}
            runs = []
            for i in range(args.repeats):
                for setting in SETTINGS:
                    runs.append(serve_and_run(repos[setting], jobs, setting, tmp, i))
                    r = runs[-1]
                    print(f"  {case} {setting}: {r.seconds:.1f} s, {r.peaks.line()}", flush=True)
            print()
            print("\n".join(report(description, args.n * len(jobs), runs)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
