"""Benchmark: CPU server settings for cohort throughput, measured with the batch CLI.

For each setting (ONNX Runtime intra-op threads per network session, whether idle ORT threads
spin, instances of each network model, instances of the pipeline / pre- and post-processing
models, dynamic-batching queue delay of the networks) a fresh embedded server is started on a copy
of the repository whose configs are rewritten through `model_config_pb2` (weights linked, not
copied), warmed with one request, and ONE `lesionseg` batch CLI process segments the cohort with
`--jobs J`. Printed: subjects/minute per setting, its ratio to the first row, and the server's
peak memory (its memory cgroup's, bench/server_memory.py).

    .venv/bin/python bench/tuning.py [--pipeline legacy|nnunet] [--n 8] [--quick | --instances] [--repeats 1] [--shared ../shared]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the synthetic models and DICOM series of the tests
sys.path.insert(0, str(ROOT / "bench"))

from cohort import check_child, make_cohort, run_child, server_settings  # noqa: E402
from server_memory import Peaks, measured_server  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Setting:
    threads: int  # ORT intra-op threads per session (0 = one per core)
    spinning: bool
    net_instances: int
    pipeline_instances: int
    queue_delay_us: int
    jobs: int

    def label(self) -> str:
        return (f"threads={self.threads or 'cores'} spin={'on' if self.spinning else 'off'} net_inst={self.net_instances} "
                f"pipe_inst={self.pipeline_instances} delay={self.queue_delay_us}us jobs={self.jobs}")


def tuned_copy(source: Path, target: Path, setting: Setting) -> Path:
    """`source` repository with every config rewritten for `setting` (weights symlinked)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    for model in source.iterdir():
        if not (model / "config.pbtxt").is_file():
            continue
        shutil.copytree(model, target / model.name, symlinks=True,
                        ignore=lambda d, names: [n for n in names if n.endswith((".onnx", ".data"))])
        for weights in list(model.rglob("*.onnx")) + list(model.rglob("*.data")):
            link = target / model.name / weights.relative_to(model)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(weights)
        config = text_format.Parse((model / "config.pbtxt").read_text(), mc.ModelConfig())
        if config.platform == "ensemble":
            continue
        is_net = config.max_batch_size > 0
        del config.instance_group[:]
        config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU,
                                  count=setting.net_instances if is_net else setting.pipeline_instances)
        if is_net:
            config.dynamic_batching.max_queue_delay_microseconds = setting.queue_delay_us
            config.parameters["intra_op_threads"].string_value = str(setting.threads)
            config.parameters["ort_spinning"].string_value = "1" if setting.spinning else "0"
        (target / model.name / "config.pbtxt").write_text(text_format.MessageToString(config))
    return target


def measure(repo: Path, images: list[Path], cohort: Path, argv_for, setting: Setting, tmp: Path) -> tuple[float, Peaks]:
    settings = server_settings(repo)
    with measured_server(settings) as served:
        warm = tmp / "warm"
        child = run_child("-m", "lesionseg.client.cli", ["-q", *argv_for(images[0], warm, settings.grpc_url, 1)], tmp / "warm.log")
        check_child(child, tmp / "warm.log", "warm-up")
        out = tmp / "out"
        child = run_child("-m", "lesionseg.client.cli", ["-q", *argv_for(cohort, out, settings.grpc_url, setting.jobs)], tmp / "run.log")
        check_child(child, tmp / "run.log", setting.label())
        peaks = served.peaks()
    shutil.rmtree(tmp / "out")
    shutil.rmtree(tmp / "warm")
    return child.seconds, peaks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", choices=("legacy", "nnunet"), default="legacy")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="only the settings added last (legacy)")
    parser.add_argument("--instances", action="store_true",
                        help="only the default (one network instance, two threads) against two instances at one thread")
    parser.add_argument("--repeats", type=int, default=1, help="rounds over the settings, in turn (default 1)")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lesionseg-tuning-") as name:
        tmp = Path(name)
        repo = tmp / "repo"
        if args.pipeline == "legacy":
            from lesionseg.export.legacy import export_sct_legacy

            export_sct_legacy(args.shared / "sct_models", repo, contrast="t2s")
            source, suffix = args.shared / "sct_testing_data" / "t2s" / "t2s.nii.gz", "T2star"

            def argv_for(inputs, out, url, jobs):
                return ["deepseg-lesion", "-i", str(inputs), "-c", "t2s", "-ofolder", str(out), "-url", url, "-j", str(jobs)]
            settings = [Setting(0, True, 1, 2, 2000, 2), Setting(0, False, 1, 2, 2000, 2), Setting(1, False, 2, 2, 2000, 2),
                        Setting(1, True, 2, 2, 2000, 2), Setting(1, False, 2, 2, 2000, 4), Setting(0, False, 1, 1, 2000, 2),
                        Setting(0, False, 1, 2, 0, 2), Setting(2, False, 1, 2, 2000, 1), Setting(1, False, 1, 2, 2000, 2),
                        Setting(1, False, 2, 2, 0, 2), Setting(1, False, 2, 3, 2000, 3), Setting(1, False, 2, 1, 2000, 2)]
            if args.quick:
                settings = settings[8:]
        else:
            import synthetic_nnunet
            from lesionseg.export.nnunet import export_nnunet

            folder = synthetic_nnunet.make_model(tmp / "model", synthetic_nnunet.REALISTIC)
            export_nnunet(folder, repo, task="bench")
            source, suffix = args.shared / "sct_testing_data" / "t2" / "t2_fake_lesion.nii.gz", "T2w"

            def argv_for(inputs, out, url, jobs):
                return ["deepseg", "-i", str(inputs), "-task", "bench", "-ofolder", str(out), "-url", url, "-j", str(jobs)]
            settings = [Setting(0, True, 1, 2, 5000, 2), Setting(0, False, 1, 2, 5000, 2), Setting(1, False, 2, 2, 5000, 2),
                        Setting(0, False, 1, 2, 5000, 1)]
        if args.instances:  # with the memory settings the export writes (run_batch 1, no pattern)
            delay = settings[0].queue_delay_us
            settings = [Setting(2, False, 1, 2, delay, 2), Setting(1, False, 2, 2, delay, 2)]
        cohort = tmp / "cohort"
        images = make_cohort(source, suffix, cohort, args.n)
        print(f"tuning: python bench/tuning.py {' '.join(sys.argv[1:])}")
        print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
              f"{args.pipeline}, N = {args.n} subjects, one batch CLI run per setting on a fresh warm server")
        base = None
        for setting in [s for _ in range(max(1, args.repeats)) for s in settings]:
            tuned = tuned_copy(repo, tmp / f"tuned-{time.monotonic_ns()}", setting)
            seconds, peaks = measure(tuned, images, cohort, argv_for, setting, tmp)
            shutil.rmtree(tuned)
            rate = args.n / seconds * 60
            base = base or rate
            print(f"  {setting.label():<75} {seconds:6.1f} s {rate:6.1f} subj/min  x{rate / base:.2f}  "
                  f"server cgroup {peaks.cgroup_mb:.0f} MiB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
