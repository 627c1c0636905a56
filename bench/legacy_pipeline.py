"""Benchmark: the legacy sct_deepseg_lesion pipeline through Triton vs in-process onnxruntime.

For each image: the time per image of one gRPC call to `deepseg_lesion_<contrast>` on the
embedded server (volume already loaded and reoriented), against the same pipeline code and the
same ONNX networks run in this process with onnxruntime, and their ratio; then the server's peak
memory (VmHWM of tritonserver and its Python-backend stub processes, summed).

    .venv/bin/python bench/legacy_pipeline.py [--repeats 5] [--shared ../shared]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_memory import hwm_sum_mb as peak_memory_mb  # noqa: E402  (bench/ is not a package)

IMAGES = [("sct_testing_data/t2s/t2s.nii.gz", "t2s"), ("sct_testing_data/t2/t2_fake_lesion.nii.gz", "t2_ax")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import onnxruntime as ort

    from lesionseg.client.transport import Transport, TransportSettings
    from lesionseg.core.nifti import load_nifti
    from lesionseg.core.orientation import reorientation, sct_to_nib
    from lesionseg.export.legacy import export_sct_legacy
    from lesionseg.server.launch.embedded import EmbeddedServer, ServerSettings, free_ports
    from lesionseg.server.pipelines.legacy import CONTRASTS, segment_lesions

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        export_sct_legacy(args.shared / "sct_models", repo, contrast="all")
        grpc, http, metrics = free_ports(3)
        settings = ServerSettings(repository=repo, grpc_port=grpc, http_port=http, metrics_port=metrics)

        def session(name: str):
            s = ort.InferenceSession(str(repo / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
            return lambda x: np.concatenate([s.run(None, {"input_1": x[i : i + 8]})[0] for i in range(0, len(x), 8)])

        rows = []
        with EmbeddedServer(settings) as server, Transport(settings.grpc_url, TransportSettings(transport="grpc")) as link:
            for rel, contrast in IMAGES:
                volume = load_nifti(args.shared / rel)
                orient = reorientation(volume.affine, volume.data.shape, sct_to_nib("RPI"))
                data = orient.forward(volume.data)
                spacing = np.asarray(orient.forward_spacing(volume.spacing), np.float32)
                params = CONTRASTS[contrast]
                ctr, les = session(f"deepseg_ctr_{params.ctr_contrast}_net"), session(f"deepseg_lesion_{contrast}_net")
                inputs = {"IMAGE": np.ascontiguousarray(data, np.float32), "SPACING": spacing}
                triton, local = [], []
                link.infer(f"deepseg_lesion_{contrast}", inputs, ["SEG"], source=rel)  # warm-up
                segment_lesions(data, spacing, params, ctr_predict=ctr, lesion_predict=les)
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    served = link.infer(f"deepseg_lesion_{contrast}", inputs, ["SEG"], source=rel)["SEG"]
                    triton.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    direct = segment_lesions(data, spacing, params, ctr_predict=ctr, lesion_predict=les)
                    local.append(time.perf_counter() - t0)
                same = int(np.sum(served != direct.seg))
                rows.append((rel, contrast, statistics.median(triton), statistics.median(local), same))
            peak = peak_memory_mb(server.pid)

    print(f"legacy pipeline, median of {args.repeats} runs per image (this machine)")
    print(f"{'image':45} {'contrast':8} {'triton s':>9} {'in-proc s':>10} {'ratio':>6} {'mask diff vox':>13}")
    for rel, contrast, t, l, diff in rows:
        print(f"{rel:45} {contrast:8} {t:9.3f} {l:10.3f} {t / l:6.2f} {diff:13d}")
    print(f"server peak memory (tritonserver + Python-backend stubs, VmHWM summed): {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
