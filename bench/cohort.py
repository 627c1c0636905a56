"""Benchmark: cohort throughput (subjects/minute) three ways, for the legacy and the nnU-Net pipeline.

A cohort of N subjects (a BIDS-like folder `sub-XX/anat/sub-XX_<suffix>.nii.gz` with
dataset_description.json; each subject a copy of one real image with its intensities scaled by
1 + 0.01 * i and small deterministic noise on its nonzero voxels, same geometry, so no two
requests are byte-identical) is segmented, in one run:

  a  SCT-style: one FRESH Python process per subject (`--sct-jobs` at a time; 1 = a shell loop),
     as a researcher looping `sct_deepseg_lesion` / `sct_deepseg` over subjects does. Timed: the
     whole loop, i.e. per subject interpreter start, imports, model load, reading the image,
     segmenting and writing the output NIfTI files.
       legacy: onnxruntime sessions on the very ONNX networks of the temporary repository (the
               centerline net and the lesion net of `deepseg_lesion_t2s`), then
               `lesionseg.server.pipelines.legacy.segment_lesions` in process; writes SCT's three outputs
               (_lesionseg, _RPI_seg, _res_RPI_seg). Conservative in SCT's favour: the real
               `sct_deepseg_lesion` also imports the whole spinalcordtoolbox package (and, before SCT
               switched these networks to ONNX in 2022, TensorFlow/Keras, much slower to import and
               run than onnxruntime) and calls the external OptiC binary for the centerline.
       nnU-Net: nnunetv2's `nnUNetPredictor` (initialize_from_trained_model_folder +
               predict_single_npy_array; tile step 0.5, gaussian, no mirroring/TTA, CPU), which is
               what `sct_deepseg` runs per subject; writes the mask.
  b  lesionseg batch mode: ONE `lesionseg` CLI process on the whole cohort folder (`--jobs`
     subjects in flight) against ONE warm embedded Triton server. Not timed: exporting the
     repository, starting the server, one warm-up request. Timed: the CLI process from spawn to
     exit (interpreter start, imports, input discovery, every subject's request, all outputs
     including lesion-statistics and JSON sidecars, the summary table).
  c  bare network: onnxruntime in this process running ONLY the network(s) on exactly the
     tiles the pipeline sends for all N subjects (legacy: the centerline and the lesion network,
     in the pipeline's BLS requests of `net_batch` items; nnU-Net: the sliding-window tiles, in
     requests of 2), sequentially, with sessions configured like the server's
     (`lesionseg.server.backend.runtimes.make_session`). Tiles are captured once, untimed; no I/O,
     no pre/post-processing.

Printed per pipeline: seconds and subjects/minute of a, b, c; b/a (lesionseg speed-up over
SCT-style) and c/b (bare network / lesionseg; <= 1.25 means serving costs <= 20 %); peak memory:
the largest SCT-style process and the batch client process (each its own VmHWM, read by the child
itself at exit through a small wrapper), and the server's (tritonserver + Python-backend stubs,
bench/server_memory.py: the peak of a memory cgroup it was started in, the largest summed PSS, and
the summed VmHWM of its processes, an upper bound); the batch client's own summary line (its
timer starts after its imports, input discovery and output checks); how many mask voxels differ
between a and b.

The `lesion_ms` pipeline is SCT 7's (SCT master): sc-crop finds the cord, the five folds of the
nnU-Net vote on the crop, the mask is pasted back. The model is five folds at the nnU-Net case's
size (random weights, `tests/synthetic_nnunet.py` LESION_MS_REALISTIC) with the narrow test
margins, the detector and classifier sc-crop's test networks (`tests/sccrop_models.py`: random
weights, whose boxes are not a real detector's, or with `--detector-epochs N` a detector trained
on ../shared's cord masks; the crop's size is printed).
       a: in a fresh process per subject, as `sct_deepseg lesion_ms` runs it: sc-crop's package
          (`sc_crop.detect` with the same detector, its classifier; `crop`, `save_bbox_nifti`,
          `uncrop`) and SCT's nnU-Net fork (nnunetv2-neuropoly, `.oracles/`, first on PYTHONPATH:
          the predictor as SCT builds it, `return_logits_per_fold`, the folds' label maps averaged
          > 0.5); writes the mask and the _cropbox file. Its detection time is logged per subject.
       b: `lesionseg deepseg lesion_ms` on the cohort (the served sccrop, then the ensemble on the box).
       no c. Then, on the warm server, one subject three ways: the served detection alone, the whole
       job (detection + crop + ensemble + paste), and the ensemble on the whole image (all six
       -box-* faces at the image's edges): the crop's share of the time and its speed lever.

With `--variants onnxruntime,auto,bf16`, b also runs once per variant, each its own
repository exported in this run and its own warm server, same cohort, same CLI command:
onnxruntime = every network FP32 on ONNX Runtime (the repository before the measured runtimes), openvino =
FP32 on OpenVINO, auto = FP32 on each network's measured runtime (the default), bf16 / int8 =
the reduced precision, whose export computes its parity report on ../shared's real images (and
refuses it when it fails: printed instead of a time). Printed per variant: seconds, subjects/min,
speed-up over the onnxruntime variant, the server's cgroup peak, mask voxels differing from the
onnxruntime variant's, and the parity summary. `--variants-only` skips a and c.

    .venv/bin/python bench/cohort.py [--n 16] [--pipelines legacy,nnunet,lesion_ms] [--legacy-contrast t2s|t2_ax] [--jobs 2] [--sct-jobs 1]
                                     [--transport auto|shm|grpc] [--shared ../shared]
                                     [--variants onnxruntime,auto,bf16] [--variants-only] [--trained-steps N]
                                     [--detector-epochs N]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the synthetic models and DICOM series of the tests
sys.path.insert(0, str(Path(__file__).resolve().parent))
import checkouts  # noqa: E402  (bench/ is not a package)
from server_memory import Peaks, measured_server  # noqa: E402

#: --legacy-contrast -> the real image its cohort is made of
LEGACY_IMAGES = {"t2s": ("sct_testing_data/t2s/t2s.nii.gz", "T2star"), "t2_ax": ("sct_testing_data/t2/t2_fake_lesion.nii.gz", "T2w")}
NNUNET_IMAGE = ("sct_testing_data/t2/t2_fake_lesion.nii.gz", "T2w")  # bench/nnunet_predictor.py's image
NNUNET_TASK = "bench"  # bench/nnunet_predictor.py's task name
NNUNET_TILES_PER_REQUEST = 2  # lesionseg.server.backend.nnunet.PredictModel's default
TRAINING_PATCH = (32, 64, 64)  # --trained-steps: the patches the nnU-Net model is trained on (1.3 s a step here)
#: the lesion_ms case's image: sc-crop's lever is the field of view (t2s before SCT's test data was cropped)
LESION_MS_IMAGE = ("sct_testing_data/t2s/t2s_uncropped.nii.gz", "T2star")
#: SCT's nnU-Net fork, as tests/conftest.py finds it
NNUNET_FORK = Path(os.environ.get("LESIONSEG_NNUNET_FORK", ROOT / ".oracles" / "nnunetv2-neuropoly"))

# One subject, SCT-style, in a fresh interpreter: the last argument is a JSON object of arguments.
# onnxruntime sessions with default options, as SCT creates them.
LEGACY_RUNNER = """\
import json, sys
from pathlib import Path
args = json.loads(sys.argv[-1])
import numpy as np
import onnxruntime as ort
from lesionseg.core.nifti import load_nifti, save_nifti, stem
from lesionseg.core.orientation import reorientation, sct_to_nib
from lesionseg.server.pipelines.legacy import CONTRASTS, segment_lesions
from lesionseg.core.grid import zoomed_affine

def network(path, batch):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: np.concatenate([session.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])

ctr, lesion = network(args["ctr"], args["batch"]), network(args["lesion"], args["batch"])
image = load_nifti(args["image"])
orient = reorientation(image.affine, image.data.shape, sct_to_nib("RPI"))
data = np.ascontiguousarray(orient.forward(image.data), dtype=np.float32)
spacing = np.asarray(orient.forward_spacing(image.spacing), np.float32).astype(np.float64)
result = segment_lesions(data, tuple(spacing), CONTRASTS[args["contrast"]], ctr_predict=ctr, lesion_predict=lesion)
out, name = Path(args["ofolder"]), stem(Path(args["image"]))
rpi = orient.target_affine(image.affine)
save_nifti(result.res_prob, zoomed_affine(rpi, data.shape, result.res_prob.shape), out / f"{name}_res_RPI_seg.nii.gz", like=image.header)
save_nifti(result.prob, rpi, out / f"{name}_RPI_seg.nii.gz", like=image.header)
save_nifti(orient.backward(result.seg).astype(np.uint8), image.affine, out / f"{name}_lesionseg.nii.gz", like=image.header)
"""

# One subject as SCT master's `sct_deepseg lesion_ms` runs it (deepseg/inference.py::segment_nnunet
# with crop): sc-crop's box, the crop, SCT's fork on it (the image reoriented to LPI as SCT does),
# the five folds' label maps averaged > 0.5, sc-crop's uncrop. The classifier is the test one (the
# package looks for its release's file by checksum).
LESION_MS_RUNNER = """\
import json, sys, time
from pathlib import Path
args = json.loads(sys.argv[-1])
started = time.perf_counter()
import numpy as np
import nibabel as nib
import torch
import sc_crop
sys.modules["sc_crop.download"].ensure_cls_model = lambda *a, **k: Path(args["cls"])
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from lesionseg.core.orientation import reorientation, sct_to_nib

predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False, perform_everything_on_device=False,
                            device=torch.device("cpu"), verbose=False, verbose_preprocessing=False, allow_tqdm=False)
predictor.initialize_from_trained_model_folder(args["model"], use_folds=args["folds"], checkpoint_name="checkpoint_final.pth")
image = nib.load(args["image"])
t0 = time.perf_counter()
bbox = sc_crop.detect(image, model_path=args["det"], **args["pad"])
cropped = sc_crop.crop(image, bbox)
crop_s = time.perf_counter() - t0
out, name = Path(args["ofolder"]), Path(args["image"]).name[: -len(".nii.gz")]
out.mkdir(parents=True, exist_ok=True)
sc_crop.save_bbox_nifti(bbox, image, str(out / f"{name}_cropbox.nii.gz"))
data = np.asarray(cropped.dataobj, np.float32)
orient = reorientation(cropped.affine, data.shape, sct_to_nib("LPI"))
spacing = orient.forward_spacing(cropped.header.get_zooms()[:3])
folds = predictor.predict_single_npy_array(orient.forward(data).transpose(2, 1, 0)[None], {"spacing": [float(s) for s in spacing[::-1]]},
                                           return_logits_per_fold=True)
seg = orient.backward(((np.sum(folds, axis=0) / len(folds)) > 0.5).transpose(2, 1, 0)).astype(np.uint8)
nib.save(sc_crop.uncrop(nib.Nifti1Image(seg, cropped.affine), bbox), str(out / f"{name}_lesion_seg.nii.gz"))
box = [int(bbox[k]) for k in ("xmin", "xmax", "ymin", "ymax", "zmin", "zmax")]
print("TIMES " + json.dumps({"crop_s": crop_s, "total_s": time.perf_counter() - started, "box": box}))
"""

NNUNET_RUNNER = """\
import json, sys
from pathlib import Path
args = json.loads(sys.argv[-1])
import numpy as np
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from lesionseg.core.nifti import load_nifti, save_nifti, stem
from lesionseg.core.orientation import reorientation, sct_to_nib

predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False, device=torch.device("cpu"),
                            verbose=False, verbose_preprocessing=False, allow_tqdm=False)
predictor.initialize_from_trained_model_folder(args["model"], use_folds=tuple(args["folds"]))
image = load_nifti(args["image"])
orient = reorientation(image.affine, image.data.shape, sct_to_nib(args["orientation"]))
data = orient.forward(image.data)
spacing = orient.forward_spacing(image.spacing)
seg = predictor.predict_single_npy_array(data.transpose(2, 1, 0)[None].astype(np.float32), {"spacing": list(spacing[::-1])})
seg = orient.backward(np.asarray(seg).transpose(2, 1, 0)).astype(np.uint8)
save_nifti(seg, image.affine, Path(args["ofolder"]) / f"{stem(Path(args['image']))}{args['suffix']}.nii.gz", like=image.header)
"""


@dataclasses.dataclass
class Result:
    name: str
    description: str
    n: int
    sct_s: float = 0.0
    sct_peak_mb: float = 0.0
    batch_s: float = 0.0
    client_peak_mb: float = 0.0
    server_peaks: Peaks | None = None
    bare_s: float = 0.0
    tiles: str = ""
    mask_diff: int = 0
    mask_voxels: int = 0
    batch_cmd: str = ""
    client_summary: str = ""
    note: str = ""
    variants: list["VariantResult"] = dataclasses.field(default_factory=list)
    code: list[tuple[str, list[float]]] = dataclasses.field(default_factory=list)  # --code: b per code version
    extra: list[str] = dataclasses.field(default_factory=list)  # more measured lines of the case


#: --variants: name -> the export's Serving options
VARIANTS = {
    "onnxruntime": {"runtime": "onnxruntime"},  # FP32, every network on ONNX Runtime: before the measured runtimes
    "openvino": {"runtime": "openvino"},
    "auto": {},  # FP32, each network's measured runtime: the default
    "bf16": {"precision": "bf16"},
    "int8": {"precision": "int8"},
}


@dataclasses.dataclass
class VariantResult:
    name: str
    seconds: float = float("nan")
    server_peaks: Peaks | None = None
    masks: list[Path] = dataclasses.field(default_factory=list)
    parity: str = ""
    refused: str = ""  # the export's error when it refused the variant
    mask_diff: str = "-"  # voxels differing from the onnxruntime variant's masks


def run_variants(args: argparse.Namespace, tmp: Path, export: Callable[..., str], warm: Callable[[str, Path], None],
                 argv_for: Callable[[str, Path], list[str]], expected_for: Callable[[Path], list[Path]]) -> list[VariantResult]:
    """b once per --variants entry: `export(serving, parity, repo)` writes the variant's repository
    (returning its parity summary), a fresh warm server serves it, the same batch CLI runs."""
    from lesionseg.core.errors import LesionsegError
    from lesionseg.export.networks import Serving
    from lesionseg.export.precision import ParityOptions

    results = []
    for name in args.variants:
        repo, out = tmp / f"repo_{name}", tmp / f"out_{name}"
        serving = Serving(**VARIANTS[name])
        try:
            parity = export(serving, ParityOptions(parity_data=args.shared / "sct_testing_data"), repo)
        except LesionsegError as exc:
            results.append(VariantResult(name=name, refused=str(exc)))
            continue
        settings = server_settings(repo)
        expected = expected_for(out)
        with measured_server(settings) as served:
            warm(settings.grpc_url, repo)
            child = run_batch(argv_for(settings.grpc_url, out), tmp / f"batch_{name}.log", expected)
            peaks = served.peaks()
        results.append(VariantResult(name=name, seconds=child.seconds, server_peaks=peaks, masks=expected, parity=parity))
        print(f"  variant {name}: {child.seconds:.1f} s, server peak {peaks.line()}", flush=True)
    base = next((v for v in results if v.name == "onnxruntime" and not v.refused), None)
    for v in results:
        if base is not None and v is not base and not v.refused:
            diff, total = mask_difference(base.masks, v.masks)
            v.mask_diff = f"{diff} of {total}"
    return results


# Every child runs under this wrapper: at exit it writes its own VmHWM (kB) to argv[1], then runs
# `-m MODULE ARGS...` or `-c CODE ARGS...`. (wait4's / getrusage's ru_maxrss cannot be used: Linux
# folds the high-water mark of the forked copy of this process into the child's at exec.)
PEAK_WRAPPER = """\
import atexit, runpy, sys
peak_file, kind, target = sys.argv[1:4]
sys.argv = [target if kind == "-m" else "-c", *sys.argv[4:]]

def report():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            open(peak_file, "w").write(line.split()[1])

atexit.register(report)
if kind == "-m":
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    exec(compile(target, "<runner>", "exec"), {"__name__": "__main__"})
"""


@dataclasses.dataclass(frozen=True)
class Child:
    seconds: float
    returncode: int
    peak_mb: float  # the child's own VmHWM at exit (nan when it did not report)
    summary: str = ""  # the batch CLI's own totals line


def run_child(kind: str, target: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> Child:
    """Run `python -m target argv` or `python -c target argv` under PEAK_WRAPPER, stdout+stderr into
    `log`; wall time from spawn to exit, exit code, peak memory of that process."""
    peak_file = log.with_suffix(".peak")
    cmd = [sys.executable, "-c", PEAK_WRAPPER, str(peak_file), kind, target, *argv]
    with open(log, "wb") as handle:
        t0 = time.perf_counter()
        returncode = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env).returncode
        seconds = time.perf_counter() - t0
    peak = int(peak_file.read_text()) / 1024 if peak_file.is_file() else float("nan")
    return Child(seconds=seconds, returncode=returncode, peak_mb=peak)


def check_child(child: Child, log: Path, what: str) -> None:
    if child.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise SystemExit(f"{what} exited {child.returncode}:\n{tail}")


def make_cohort(source: Path, suffix: str, root: Path, n: int) -> list[Path]:
    """N variants of `source` as `root/sub-XX/anat/sub-XX_<suffix>.nii.gz` (float32, same geometry)."""
    import nibabel as nib

    image = nib.load(str(source))
    data = np.asarray(image.dataobj, dtype=np.float32)
    sigma = 0.005 * float(data[data != 0].std())
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "lesionseg cohort benchmark", "BIDSVersion": "1.8.0"}))
    width = max(2, len(str(n)))
    paths = []
    for i in range(n):
        rng = np.random.default_rng(1000 + i)
        variant = np.where(data != 0, data * (1 + 0.01 * i) + rng.normal(0.0, sigma, data.shape), 0).astype(np.float32)
        header = image.header.copy()
        header.set_data_dtype(np.float32)
        out = nib.Nifti1Image(variant, image.affine, header)
        out.header["scl_slope"], out.header["scl_inter"] = 1.0, 0.0
        sub = f"sub-{i + 1:0{width}d}"
        path = root / sub / "anat" / f"{sub}_{suffix}.nii.gz"
        path.parent.mkdir(parents=True)
        nib.save(out, str(path))
        paths.append(path)
    return paths


def server_settings(repo: Path):
    from lesionseg.server.launch.embedded import ServerSettings, free_ports

    grpc, http, metrics = free_ports(3)
    return ServerSettings(repository=repo, grpc_port=grpc, http_port=http, metrics_port=metrics)


def ort_session(path: Path):
    """An onnxruntime session configured like the server's networks (threads as the server reads them)."""
    from lesionseg.server.backend.runtimes import make_session

    return make_session(path, intra_op_threads=int(os.environ.get("LESIONSEG_ORT_THREADS", "0")))


def chunked(session, batch: int, store: list[np.ndarray] | None) -> Callable[[np.ndarray], np.ndarray]:
    """A predict callable sending `batch` items per session.run (the pipeline's BLS requests),
    recording every chunk into `store`."""
    name = session.get_inputs()[0].name

    def predict(x: np.ndarray) -> np.ndarray:
        outs = []
        for i in range(0, len(x), batch):
            chunk = np.ascontiguousarray(x[i : i + batch], dtype=np.float32)
            if store is not None:
                store.append(chunk)
            outs.append(session.run(None, {name: chunk})[0])
        return np.concatenate(outs)

    return predict


def time_bare(calls: list[tuple[object, np.ndarray]]) -> float:
    """Run every captured (session, chunk) in order; wall seconds."""
    names = {id(s): s.get_inputs()[0].name for s, _ in calls}
    t0 = time.perf_counter()
    for session, chunk in calls:
        session.run(None, {names[id(session)]: chunk})
    return time.perf_counter() - t0


def run_sct_style(images: list[Path], runner: str, make_spec: Callable[[Path], dict], logs: Path, jobs: int,
                  env: dict[str, str] | None = None) -> tuple[float, float]:
    """Every subject in its own fresh process, `jobs` at a time (with `env`); (wall seconds, largest peak MiB)."""
    logs.mkdir(parents=True, exist_ok=True)

    def one(image: Path) -> Child:
        log = logs / f"{image.name}.log"
        child = run_child("-c", runner, [json.dumps(make_spec(image))], log, env)
        check_child(child, log, f"SCT-style run on {image.name}")
        return child

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        children = list(pool.map(one, images))
    return time.perf_counter() - t0, max(c.peak_mb for c in children)


def run_batch(argv: list[str], log: Path, expected: list[Path], env: dict[str, str] | None = None) -> Child:
    """`python -m lesionseg.client.cli ARGV` (under the wrapper, with `env`: another checkout's
    code), checked: exit 0 and every mask written."""
    child = run_child("-m", "lesionseg.client.cli", argv, log, env)
    check_child(child, log, "lesionseg batch CLI")
    summary = [line for line in log.read_text(errors="replace").splitlines() if "subjects/min" in line]
    child = dataclasses.replace(child, summary=summary[-1].strip() if summary else "(no summary line)")
    missing = [p for p in expected if not p.is_file()]
    if missing:
        raise SystemExit(f"lesionseg batch CLI exited 0 but {len(missing)} masks are missing, e.g. {missing[0]}")
    return child


def compare_code(args: argparse.Namespace, tmp: Path, argv_for: Callable[[Path], list[str]],
                 expected_for: Callable[[Path], list[Path]]) -> list[tuple[str, list[float]]]:
    """b again for the installed code and every --code checkout, the versions alternating
    `--code-repeats` times against the same warm server: [(version, seconds of each run)]."""
    versions = {"installed": checkouts.environment(None, tmp / "code_installed")}
    for name, folder in checkouts.parse(args.code).items():
        versions[name] = checkouts.environment(folder, tmp / f"code_{name}")
    seconds: dict[str, list[float]] = {name: [] for name in versions}
    for repeat in range(args.code_repeats):
        for name, env in versions.items():
            out = tmp / f"out_code_{name}_{repeat}"
            child = run_batch(argv_for(out), tmp / f"batch_code_{name}_{repeat}.log", expected_for(out), env)
            seconds[name].append(child.seconds)
            print(f"  b with the {name} code: {child.seconds:.1f} s", flush=True)
    return list(seconds.items())


def mask_difference(a: list[Path], b: list[Path]) -> tuple[int, int]:
    """(voxels that differ, total voxels) between two lists of masks."""
    import nibabel as nib

    diff = total = 0
    for pa, pb in zip(a, b):
        ma, mb = np.asarray(nib.load(str(pa)).dataobj), np.asarray(nib.load(str(pb)).dataobj)
        diff += int(np.sum((ma > 0) != (mb > 0)))
        total += ma.size
    return diff, total


def shown(argv: list[str], tmp: Path) -> str:
    """The batch command line as printed: `lesionseg ...`, temporary paths as $TMP."""
    return shlex.join(["lesionseg", *argv]).replace(str(tmp), "$TMP")


def cli_tail(args: argparse.Namespace, url: str, ofolder: Path) -> list[str]:
    tail = ["-ofolder", str(ofolder), "-url", url, "--jobs", str(args.jobs)]
    return tail + (["--transport", args.transport] if args.transport else [])


def bench_legacy(args: argparse.Namespace, tmp: Path) -> Result:
    from lesionseg.client.transport import Transport, TransportSettings
    from lesionseg.client.legacy import LESION, legacy_outputs
    from lesionseg.core.nifti import load_nifti
    from lesionseg.core.orientation import reorientation, sct_to_nib
    from lesionseg.core.catalogue import legacy_model
    from lesionseg.export.legacy import export_sct_legacy
    from lesionseg.server.pipelines.legacy import CONTRASTS, segment_lesions
    from lesionseg.server.repository.legacy import pipeline_spec

    contrast, params = args.legacy_contrast, CONTRASTS[args.legacy_contrast]
    legacy_image = LEGACY_IMAGES[contrast]
    repo = tmp / "repo"
    export_sct_legacy(args.shared / "sct_models", repo, contrast=contrast)
    if args.variants_only:
        return legacy_variants(args, tmp, contrast)
    net_batch = int(pipeline_spec(contrast).parameters["net_batch"])
    ctr_path = repo / f"deepseg_ctr_{params.ctr_contrast}_net" / "1" / "model.onnx"
    lesion_path = repo / f"deepseg_lesion_{contrast}_net" / "1" / "model.onnx"
    cohort = tmp / "cohort"
    images = make_cohort(args.shared / legacy_image[0], legacy_image[1], cohort, args.n)
    inputs = []
    for path in images:
        volume = load_nifti(path)
        orient = reorientation(volume.affine, volume.data.shape, sct_to_nib("RPI"))
        inputs.append((np.ascontiguousarray(orient.forward(volume.data), dtype=np.float32),
                       np.asarray(orient.forward_spacing(volume.spacing), np.float32)))
    result = Result(name="legacy", n=args.n,
                    note="a is conservative in SCT's favour: onnxruntime without spinalcordtoolbox's imports or the OptiC "
                         "binary (SCT before 2022 ran these networks in TensorFlow/Keras, slower still)",
                    description=f"legacy sct_deepseg_lesion -c {contrast} ({legacy_model(contrast)}), "
                                f"{args.n} variants of {Path(legacy_image[0]).name} {list(inputs[0][0].shape)}")

    # c: capture the network calls of every subject (untimed, real outputs: the lesion chunks
    # follow the centerline), then time the networks alone
    ctr_session, lesion_session = ort_session(ctr_path), ort_session(lesion_path)
    calls: list[tuple[object, np.ndarray]] = []
    for data, spacing in inputs:
        ctr_chunks: list[np.ndarray] = []
        lesion_chunks: list[np.ndarray] = []
        segment_lesions(data, tuple(spacing.astype(np.float64)), params, ctr_predict=chunked(ctr_session, net_batch, ctr_chunks),
                        lesion_predict=chunked(lesion_session, net_batch, lesion_chunks))
        calls += [(ctr_session, c) for c in ctr_chunks] + [(lesion_session, c) for c in lesion_chunks]
    n_ctr = sum(len(c) for s, c in calls if s is ctr_session)
    n_lesion = sum(len(c) for s, c in calls if s is lesion_session)
    result.tiles = (f"{n_ctr // args.n} centerline blocks 80x80 + {n_lesion // args.n} lesion chunks 48^3 per subject, "
                    f"{net_batch} per request")
    result.bare_s = time_bare(calls)
    del calls, ctr_session, lesion_session

    # a: SCT-style, a fresh process per subject
    out_a, out_b = tmp / "out_sct", tmp / "out_lesionseg"

    def spec(image: Path) -> dict:
        return {"image": str(image), "ofolder": str(out_a / image.parent.relative_to(cohort)), "contrast": contrast,
                "ctr": str(ctr_path), "lesion": str(lesion_path), "batch": net_batch}

    result.sct_s, result.sct_peak_mb = run_sct_style(images, LEGACY_RUNNER, spec, tmp / "logs_sct", args.sct_jobs)

    # b: one lesionseg CLI process on the cohort folder, one warm server
    settings = server_settings(repo)
    expected = [legacy_outputs(p, out_b / p.parent.relative_to(cohort))[LESION] for p in images]
    with measured_server(settings) as served:
        with Transport(settings.grpc_url, TransportSettings(transport="grpc")) as link:  # warm-up, untimed
            link.infer(legacy_model(contrast), {"IMAGE": inputs[0][0], "SPACING": inputs[0][1]}, ["SEG"], source=images[0])
        def argv_for(out: Path) -> list[str]:
            return ["-q", "deepseg-lesion", "-i", str(cohort), "-c", contrast] + cli_tail(args, settings.grpc_url, out)

        result.batch_cmd = shown(argv_for(out_b), tmp)
        child = run_batch(argv_for(out_b), tmp / "batch.log", expected)
        result.server_peaks = served.peaks()
        if args.code:
            result.code = compare_code(args, tmp, argv_for,
                                       lambda out: [legacy_outputs(p, out / p.parent.relative_to(cohort))[LESION] for p in images])
    result.batch_s, result.client_peak_mb, result.client_summary = child.seconds, child.peak_mb, child.summary
    sct_masks = [legacy_outputs(p, out_a / p.parent.relative_to(cohort))[LESION] for p in images]
    result.mask_diff, result.mask_voxels = mask_difference(sct_masks, expected)
    result.variants = legacy_variants(args, tmp, contrast, cohort=cohort, images=images).variants
    return result


def legacy_variants(args: argparse.Namespace, tmp: Path, contrast: str, *, cohort: Path | None = None,
                    images: list[Path] | None = None) -> Result:
    """The legacy pipeline's --variants (b only)."""
    from lesionseg.client.transport import Transport, TransportSettings
    from lesionseg.client.legacy import LESION, legacy_outputs
    from lesionseg.core.nifti import load_nifti
    from lesionseg.core.orientation import reorientation, sct_to_nib
    from lesionseg.core.catalogue import legacy_model
    from lesionseg.export.legacy import export_sct_legacy

    if cohort is None or images is None:
        cohort = tmp / "cohort"
        images = make_cohort(args.shared / LEGACY_IMAGES[contrast][0], LEGACY_IMAGES[contrast][1], cohort, args.n)
    volume = load_nifti(images[0])
    orient = reorientation(volume.affine, volume.data.shape, sct_to_nib("RPI"))
    first = (np.ascontiguousarray(orient.forward(volume.data), dtype=np.float32),
             np.asarray(orient.forward_spacing(volume.spacing), np.float32))

    def export(serving, parity, repo: Path) -> str:
        result = export_sct_legacy(args.shared / "sct_models", repo, contrast=contrast, serving=serving,
                                   parity=parity if serving.precision != "fp32" else None)
        return "; ".join(f"{net}: {report.summary()}" for net, report in result.reports.items())

    def warm(url: str, repo: Path) -> None:
        with Transport(url, TransportSettings(transport="grpc")) as link:
            link.infer(legacy_model(contrast), {"IMAGE": first[0], "SPACING": first[1]}, ["SEG"], source=images[0])

    result = Result(name="legacy", n=args.n, description=f"legacy sct_deepseg_lesion -c {contrast}, {args.n} variants of "
                                                          f"{Path(LEGACY_IMAGES[contrast][0]).name}: variants only")
    result.variants = run_variants(
        args, tmp, export, warm,
        lambda url, out: ["-q", "deepseg-lesion", "-i", str(cohort), "-c", contrast] + cli_tail(args, url, out),
        lambda out: [legacy_outputs(p, out / p.parent.relative_to(cohort))[LESION] for p in images])
    return result


def bench_nnunet(args: argparse.Namespace, tmp: Path) -> Result:
    from lesionseg.client.transport import Transport, TransportSettings
    from lesionseg.core.nifti import load_nifti
    from lesionseg.core.orientation import reorientation, sct_to_nib
    from lesionseg.client.task import output_paths
    from lesionseg.core.catalogue import task_info
    from lesionseg.export.nnunet import export_nnunet
    from synthetic_nnunet import REALISTIC, make_model
    from lesionseg.server.pipelines import nnunet

    folder = make_model(tmp / "model", REALISTIC)
    weights = trained(args, folder)
    repo = tmp / "repo"
    plan = export_nnunet(folder, repo, task=NNUNET_TASK).plan
    cohort = tmp / "cohort"
    images = make_cohort(args.shared / NNUNET_IMAGE[0], NNUNET_IMAGE[1], cohort, args.n)
    if args.variants_only:
        return nnunet_variants(args, tmp, folder, plan, cohort, images, weights)
    inputs = []
    for path in images:
        volume = load_nifti(path)
        orient = reorientation(volume.affine, volume.data.shape, sct_to_nib(plan.orientation))
        inputs.append((np.ascontiguousarray(orient.forward(volume.data), dtype=np.float32),
                       np.asarray(orient.forward_spacing(volume.spacing), np.float32)))
    result = Result(name="nnunet", n=args.n,
                    note="a is conservative in SCT's favour: nnunetv2 and torch without spinalcordtoolbox's imports",
                    description=f"nnU-Net seg_ms_lesion-sized model (patch {list(plan.patch_size)}, {weights}, "
                                f"task {NNUNET_TASK!r}), {args.n} variants of {Path(NNUNET_IMAGE[0]).name} {list(inputs[0][0].shape)}")

    # c: the sliding window's tiles of every subject (untimed), then the fold networks alone
    sessions = [ort_session(repo / net / "1" / "model.onnx") for net in plan.networks]
    calls: list[tuple[object, np.ndarray]] = []
    for data, spacing in inputs:
        pre, _ = nnunet.preprocess(data, tuple(float(s) for s in spacing), plan)
        captured: list[np.ndarray] = []
        nnunet.sliding_window(pre, plan, lambda t: captured.append(t) or np.zeros((len(t), plan.num_classes, *plan.patch_size), np.float32))
        tiles = np.concatenate(captured)
        for session in sessions:
            calls += [(session, np.ascontiguousarray(tiles[i : i + NNUNET_TILES_PER_REQUEST]))
                      for i in range(0, len(tiles), NNUNET_TILES_PER_REQUEST)]
    n_tiles = sum(len(c) for _, c in calls) // len(sessions)
    result.tiles = (f"{n_tiles / args.n:g} tiles per subject x {len(sessions)} fold network(s), "
                    f"{NNUNET_TILES_PER_REQUEST} per request")
    for session in sessions:  # warm-up, untimed
        session.run(None, {session.get_inputs()[0].name: calls[0][1]})
    result.bare_s = time_bare(calls)
    del calls, sessions

    # a: SCT-style (sct_deepseg): nnUNetPredictor in a fresh process per subject
    out_a, out_b = tmp / "out_sct", tmp / "out_lesionseg"
    suffix = task_info(NNUNET_TASK).suffix
    folds = [str(f) for f in REALISTIC.folds]

    def spec(image: Path) -> dict:
        return {"image": str(image), "ofolder": str(out_a / image.parent.relative_to(cohort)), "model": str(folder),
                "folds": folds, "orientation": plan.orientation, "suffix": suffix}

    result.sct_s, result.sct_peak_mb = run_sct_style(images, NNUNET_RUNNER, spec, tmp / "logs_sct", args.sct_jobs)

    # b: one lesionseg CLI process on the cohort folder, one warm server
    settings = server_settings(repo)

    def masks(ofolder: Path) -> list[Path]:
        return [next(iter(output_paths(p, NNUNET_TASK, plan.labels, None, ofolder=ofolder / p.parent.relative_to(cohort)).values()))
                for p in images]

    expected = masks(out_b)
    with measured_server(settings) as served:
        with Transport(settings.grpc_url, TransportSettings(transport="grpc")) as link:  # warm-up, untimed
            link.infer(NNUNET_TASK, {"IMAGE": inputs[0][0], "SPACING": inputs[0][1]}, ["SEG"], source=images[0])
        argv = ["-q", "deepseg", "-i", str(cohort), "-task", NNUNET_TASK] + cli_tail(args, settings.grpc_url, out_b)
        result.batch_cmd = shown(argv, tmp)
        child = run_batch(argv, tmp / "batch.log", expected)
        result.server_peaks = served.peaks()
        if args.code:
            result.code = compare_code(
                args, tmp, lambda out: ["-q", "deepseg", "-i", str(cohort), "-task", NNUNET_TASK] + cli_tail(args, settings.grpc_url, out),
                masks)
    result.batch_s, result.client_peak_mb, result.client_summary = child.seconds, child.peak_mb, child.summary
    result.mask_diff, result.mask_voxels = mask_difference(masks(out_a), expected)
    result.variants = nnunet_variants(args, tmp, folder, plan, cohort, images, weights).variants
    return result


def trained(args: argparse.Namespace, folder: Path) -> str:
    """With --trained-steps: the model's folds trained in place on ../shared's cord masks
    (tests/trained_nnunet.py); what the weights are, for the report."""
    if not args.trained_steps:
        return "random weights"
    from trained_nnunet import train_model

    started = time.perf_counter()
    losses = train_model(folder, args.shared / "sct_testing_data", steps=args.trained_steps, patch=TRAINING_PATCH)
    print(f"trained {len(losses)} fold(s) {args.trained_steps} steps of {list(TRAINING_PATCH)} patches in "
          f"{time.perf_counter() - started:.0f} s, last losses {', '.join(f'{v:.3f}' for v in losses.values())}", flush=True)
    return f"weights trained {args.trained_steps} steps on ../shared's cord masks"


def nnunet_variants(args: argparse.Namespace, tmp: Path, folder: Path, plan, cohort: Path, images: list[Path],
                    weights: str = "random weights") -> Result:
    """The nnU-Net pipeline's --variants (b only), every variant exported from the same model folder."""
    from lesionseg.client.transport import Transport, TransportSettings
    from lesionseg.core.nifti import load_nifti
    from lesionseg.core.orientation import reorientation, sct_to_nib
    from lesionseg.client.task import output_paths
    from lesionseg.export.nnunet import export_nnunet

    volume = load_nifti(images[0])
    orient = reorientation(volume.affine, volume.data.shape, sct_to_nib(plan.orientation))
    first = (np.ascontiguousarray(orient.forward(volume.data), dtype=np.float32),
             np.asarray(orient.forward_spacing(volume.spacing), np.float32))

    def export(serving, parity, repo: Path) -> str:
        result = export_nnunet(folder, repo, task=NNUNET_TASK, serving=serving, parity=parity if serving.precision != "fp32" else None)
        return result.report.summary() if result.report is not None else ""

    def warm(url: str, repo: Path) -> None:
        with Transport(url, TransportSettings(transport="grpc")) as link:
            link.infer(NNUNET_TASK, {"IMAGE": first[0], "SPACING": first[1]}, ["SEG"], source=images[0])

    def masks(ofolder: Path) -> list[Path]:
        return [next(iter(output_paths(p, NNUNET_TASK, plan.labels, None, ofolder=ofolder / p.parent.relative_to(cohort)).values()))
                for p in images]

    result = Result(name="nnunet", n=args.n, description=f"nnU-Net seg_ms_lesion-sized model (patch {list(plan.patch_size)}, "
                                                          f"{weights}), {args.n} variants of {Path(NNUNET_IMAGE[0]).name}: variants only")
    result.variants = run_variants(
        args, tmp, export, warm,
        lambda url, out: ["-q", "deepseg", "-i", str(cohort), "-task", NNUNET_TASK] + cli_tail(args, url, out), masks)
    return result


def bench_lesion_ms(args: argparse.Namespace, tmp: Path) -> Result:
    """SCT 7's lesion_ms on sc-crop's box: a (sc-crop + SCT's fork per process) and b (see the module docstring)."""
    import re
    import statistics

    from lesionseg.client.images import load_image
    from lesionseg.client.servers import open_servers
    from lesionseg.client.task import TaskJob, output_paths
    from lesionseg.export.nnunet import export_nnunet
    from lesionseg.export.sccrop import install_sccrop
    import sccrop_models
    from synthetic_nnunet import LESION_MS_REALISTIC, make_model

    if not any(NNUNET_FORK.glob("nnunetv2_neuropoly-*.dist-info")):
        raise SystemExit(f"SCT's nnU-Net fork not found at {NNUNET_FORK}: see the README's test command")
    folder = make_model(tmp / "model", LESION_MS_REALISTIC)
    (folder.parent / "crop_metadata.json").write_text(json.dumps({"sc_crop_version": "test", **sccrop_models.PADDING}))
    repo = tmp / "repo"
    plan = export_nnunet(folder, repo, task="lesion_ms", fold_combination="vote", crop=sccrop_models.PADDING).plan
    networks = sccrop_models.make(tmp / "sccrop", trained=bool(args.detector_epochs), data_root=args.shared / "sct_testing_data",
                                  epochs=args.detector_epochs)
    detector_kind = f"a detector trained {args.detector_epochs} epochs on ../shared's cord masks" if args.detector_epochs \
        else "sc-crop's random-weight test networks"
    install_sccrop(str(networks), repo)
    cohort = tmp / "cohort"
    images = make_cohort(args.shared / LESION_MS_IMAGE[0], LESION_MS_IMAGE[1], cohort, args.n)
    shape = load_image(images[0]).data.shape
    result = Result(name="lesion_ms", n=args.n,
                    note="a is conservative in SCT's favour: sc-crop and the fork without spinalcordtoolbox's imports",
                    description=f"SCT 7's lesion_ms on sc-crop's box: 5 nnU-Net folds voting (patch {list(plan.patch_size)}, "
                                f"features {list(LESION_MS_REALISTIC.features)}, random weights) after {detector_kind}, "
                                f"{args.n} variants of {Path(LESION_MS_IMAGE[0]).name} {list(shape)}")

    # a: sct_deepseg lesion_ms per subject, in a fresh process, SCT's fork first on the path
    out_a, out_b = tmp / "out_sct", tmp / "out_lesionseg"

    def spec(image: Path) -> dict:
        return {"image": str(image), "ofolder": str(out_a / image.parent.relative_to(cohort)), "model": str(folder),
                "folds": list(LESION_MS_REALISTIC.folds), "det": str(networks / sccrop_models.DETECTOR),
                "cls": str(networks / sccrop_models.CLASSIFIER), "pad": sccrop_models.PADDING}

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(NNUNET_FORK), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    result.sct_s, result.sct_peak_mb = run_sct_style(images, LESION_MS_RUNNER, spec, tmp / "logs_sct", args.sct_jobs, env)
    times = [json.loads(re.search(r"^TIMES (.*)$", (tmp / "logs_sct" / f"{p.name}.log").read_text(), re.M).group(1)) for p in images]
    boxes = {tuple(t["box"]) for t in times}
    box = times[0]["box"]
    fraction = np.prod([box[2 * i + 1] - box[2 * i] + 1 for i in range(3)]) / np.prod(shape)
    result.extra.append(f"a: sc-crop's detection and crop {sum(t['crop_s'] for t in times):.1f} s of the subjects' "
                        f"{sum(t['total_s'] for t in times):.1f} s in their scripts ({sum(t['crop_s'] for t in times) / sum(t['total_s'] for t in times):.1%}); "
                        f"box {box} = {fraction:.1%} of the image's voxels ({len(boxes)} distinct boxes over the cohort)")

    # b: one lesionseg CLI process on the cohort, one warm server; then one subject three ways
    settings = server_settings(repo)
    expected = [next(iter(output_paths(p, "lesion_ms", plan.labels, None, ofolder=out_b / p.parent.relative_to(cohort)).values()))
                for p in images]
    with measured_server(settings) as served:
        with open_servers(settings.grpc_url) as servers:
            image = load_image(images[0])
            TaskJob(servers=servers, task="lesion_ms").segment(image)  # warm-up, untimed
            argv = ["-q", "deepseg", "lesion_ms", "-i", str(cohort)] + cli_tail(args, settings.grpc_url, out_b)
            result.batch_cmd = shown(argv, tmp)
            child = run_batch(argv, tmp / "batch.log", expected)
            result.server_peaks = served.peaks()
            whole = {"xmin": 0, "xmax": shape[0] - 1, "ymin": 0, "ymax": shape[1] - 1, "zmin": 0, "zmax": shape[2] - 1}
            detect, cropped, full = [], [], []
            passes_before = network_passes(settings.grpc_url, plan.networks)
            for _ in range(2):
                t0 = time.perf_counter()
                servers.run(lambda server: TaskJob._detected_box(server, image, sccrop_models.PADDING, {}))
                detect.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                TaskJob(servers=servers, task="lesion_ms").segment(image)
                cropped.append(time.perf_counter() - t0)
            passes = (network_passes(settings.grpc_url, plan.networks) - passes_before) / 2
            t0 = time.perf_counter()
            TaskJob(servers=servers, task="lesion_ms", box=whole).segment(image)
            full.append(time.perf_counter() - t0)
    d, c, f = statistics.median(detect), statistics.median(cropped), statistics.median(full)
    result.extra.append(f"b, one subject on the warm server: served detection {d:.2f} s of the whole job's {c:.1f} s ({d / c:.1%}); "
                        f"the ensemble on the whole image (-box-* at its edges) {f:.1f} s: the crop is {f / c:.2f}x faster")
    result.extra.append(compute_ceiling(repo, plan, passes, result.sct_s / args.n))
    result.batch_s, result.client_peak_mb, result.client_summary = child.seconds, child.peak_mb, child.summary
    result.mask_diff, result.mask_voxels = mask_difference([out_a / p.parent.relative_to(cohort) / f"{p.name[:-7]}_lesion_seg.nii.gz"
                                                            for p in images], expected)
    return result


def network_passes(url: str, names) -> int:
    """The items (tiles) the server's models `names` have run so far (Triton's statistics)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    return sum(stat.inference_count for name in names for stat in client.get_inference_statistics(name).model_stats)


def compute_ceiling(repo: Path, plan, passes: float, sct_per_subject: float) -> str:
    """The best speed-up over a this CPU allows on the same computation: one subject's network
    passes x their FLOPs (counted from the ONNX graph, `lesionseg.export.flops`) at this CPU's
    FP32 matrix-product peak, measured now with every core (bench/roofline.py), is the least time
    any FP32 implementation needs per subject; a's time per subject over it bounds b/a."""
    import onnx

    import roofline
    from lesionseg.export.flops import network_flops

    model = onnx.load(str(repo / plan.networks[0] / "1" / "model.onnx"))
    gflop = network_flops(model, (1, 1, *plan.patch_size)) / 1e9
    threads = len(os.sched_getaffinity(0))
    peak = roofline.best(roofline.peaks(threads), "fp32")
    floor = passes * gflop / peak
    return (f"compute ceiling: {passes:g} network passes per subject (all folds) x {gflop:.0f} GFLOP = {passes * gflop:.0f} GFLOP; "
            f"this CPU's FP32 matrix-product peak with {threads} threads {peak:.0f} GFLOP/s (measured now) -> at least {floor:.1f} s "
            f"per subject in FP32 at 100 % of peak; a took {sct_per_subject:.1f} s per subject, so no FP32 implementation doing "
            f"these multiply-accumulates can be more than {sct_per_subject / floor:.2f}x a on this CPU")


def rate(n: int, seconds: float) -> float:
    return n / seconds * 60 if seconds > 0 else float("nan")


def variant_lines(r: Result) -> list[str]:
    """The --variants table: each against the onnxruntime variant when it ran."""
    base = next((v for v in r.variants if v.name == "onnxruntime" and not v.refused), None)
    lines = ["  variants (b only, each its own repository and warm server):",
             f"  {'variant':12} {'seconds':>8} {'subj/min':>9} {'vs onnxruntime':>15} {'cgroup MiB':>11} {'masks vs onnxruntime':>22}"]
    for v in r.variants:
        if v.refused:
            lines.append(f"  {v.name:12} refused by its export: {v.refused}")
            continue
        speed = f"{base.seconds / v.seconds:.2f}x" if base else "-"
        lines.append(f"  {v.name:12} {v.seconds:8.1f} {rate(r.n, v.seconds):9.1f} {speed:>15} {v.server_peaks.cgroup_mb:11.0f} {v.mask_diff:>22}")
        if v.parity:
            lines.append(f"  {'':12} parity: {v.parity}")
    return lines


def report(r: Result, args: argparse.Namespace) -> str:
    if args.variants_only:
        return "\n".join([r.description, *variant_lines(r)])
    a, b, c = rate(r.n, r.sct_s), rate(r.n, r.batch_s), rate(r.n, r.bare_s)
    bare = [f"  {'c bare network, onnxruntime in-process':48} {r.bare_s:8.1f} {c:9.1f} {'-':>9}"] if r.bare_s else []
    bare_ratio = [f"  c/b = {c / b:5.2f}  (bare network / lesionseg; <= 1.25 means serving costs <= 20 %)",
                  f"  c ran {r.tiles}"] if r.bare_s else []
    lines = [
        r.description,
        f"  {'':48} {'seconds':>8} {'subj/min':>9} {'peak MiB':>9}",
        f"  {f'a SCT-style, fresh process per subject (x{args.sct_jobs})':48} {r.sct_s:8.1f} {a:9.1f} {r.sct_peak_mb:9.0f}  (largest process)",
        f"  {f'b lesionseg batch CLI, warm server (--jobs {args.jobs})':48} {r.batch_s:8.1f} {b:9.1f} {r.client_peak_mb:9.0f}  (client process)",
        *bare,
        f"  b/a = {b / a:5.2f}  (lesionseg speed-up over SCT-style)",
        *bare_ratio,
        f"  server peak memory (tritonserver + Python-backend stubs, bench/server_memory.py): {r.server_peaks.line()}",
        *[f"  {line}" for line in r.extra],
        f"  masks a vs b: {r.mask_diff} of {r.mask_voxels} voxels differ",
        f"  b ran: {r.batch_cmd}",
        f"  b's own summary: {r.client_summary}",
        f"  note: {r.note}",
    ]
    if r.variants:
        lines += variant_lines(r)
    if r.code:
        import statistics

        base, base_min = statistics.median(r.code[0][1]), min(r.code[0][1])
        lines.append(f"  b per code version ({args.code_repeats} runs each, alternating, same warm server):")
        for name, runs in r.code:
            median = statistics.median(runs)
            lines.append(f"    {name:12} median {median:6.1f} s ({rate(r.n, median):6.1f} subj/min), fastest {min(runs):6.1f} s; "
                         f"throughput vs {r.code[0][0]}: {base / median:.3f} (median), {base_min / min(runs):.3f} (fastest)   "
                         f"runs {', '.join(f'{x:.1f}' for x in runs)}")
    return "\n".join(lines)


BENCHES = {"legacy": bench_legacy, "nnunet": bench_nnunet, "lesion_ms": bench_lesion_ms}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=16, help="subjects in the cohort (default 16)")
    parser.add_argument("--pipelines", default="legacy,nnunet", help="comma-separated: legacy, nnunet, lesion_ms (default legacy,nnunet)")
    parser.add_argument("--legacy-contrast", choices=sorted(LEGACY_IMAGES), default="t2s",
                        help="the legacy pipeline's contrast (default t2s: t2s.nii.gz; t2_ax: t2_fake_lesion.nii.gz)")
    parser.add_argument("--jobs", type=int, default=2, help="lesionseg batch --jobs (default 2)")
    parser.add_argument("--sct-jobs", type=int, default=1, help="SCT-style processes at once (default 1: a sequential loop)")
    parser.add_argument("--transport", choices=("auto", "shm", "grpc"), help="passed to the lesionseg CLI (default: its own)")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="folder with sct_models/ and sct_testing_data/")
    parser.add_argument("--variants", default="", help=f"comma-separated b variants: {', '.join(VARIANTS)} (default none)")
    parser.add_argument("--variants-only", action="store_true", help="skip a and c: only the variants' b runs")
    parser.add_argument("--detector-epochs", type=int, default=0, metavar="N",
                        help="lesion_ms: train sc-crop's test detector N epochs on ../shared's cord masks first "
                             "(tests/sccrop_models.py; 150: about 7 minutes here; default 0: random weights)")
    parser.add_argument("--trained-steps", type=int, default=0, metavar="N",
                        help="nnunet: train the model N steps on ../shared's cord masks first (tests/trained_nnunet.py; "
                             "default 0: random weights)")
    parser.add_argument("--code", action="append", default=[], metavar="NAME=DIR",
                        help="also run b with another checkout's code (repeatable), alternating with the installed code")
    parser.add_argument("--code-repeats", type=int, default=3, help="b runs per code version with --code (default 3)")
    args = parser.parse_args()
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if sorted(set(args.variants) - set(VARIANTS)):
        parser.error(f"--variants: unknown {', '.join(sorted(set(args.variants) - set(VARIANTS)))}; choose from {', '.join(VARIANTS)}")
    if args.variants_only and not args.variants:
        parser.error("--variants-only needs --variants")
    pipelines = [p.strip() for p in args.pipelines.split(",") if p.strip()]
    unknown = sorted(set(pipelines) - set(BENCHES))
    if unknown or not pipelines:
        parser.error(f"--pipelines: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(BENCHES)}")
    if "lesion_ms" in pipelines and (args.variants or args.code):
        parser.error("--variants and --code are for the legacy and nnunet pipelines")
    if args.n < 1 or args.jobs < 1 or args.sct_jobs < 1:
        parser.error("--n, --jobs and --sct-jobs must be at least 1")

    print(f"cohort benchmark: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M:%S %Z}, {cpus} CPUs, N = {args.n} subjects, "
          f"lesionseg --jobs {args.jobs}, SCT-style {args.sct_jobs} at a time, transport {args.transport or 'CLI default'}",
          flush=True)
    for name in pipelines:
        with tempfile.TemporaryDirectory(prefix=f"lesionseg-cohort-{name}-") as tmp:
            result = BENCHES[name](args, Path(tmp))
        print()
        print(report(result, args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
