"""Benchmark: an nnU-Net model through lesionseg/Triton vs nnunetv2's predictor in-process, and vs
the bare ONNX network on the same tiles.

On one image and one checkpoint (a seg_ms_lesion-sized model with random weights: 6 stages,
32..320 features, patch 64x128x128, built by `tests/synthetic_nnunet.py`):
  triton   one gRPC call to the task ensemble on the embedded server (image already loaded)
  nnunetv2 nnUNetPredictor.predict_single_npy_array in this process (tile step 0.5, gaussian, no TTA)
  bare     onnxruntime in this process on exactly the tiles the sliding window sends
Prints the median wall time of each and the ratios.

    .venv/bin/python bench/nnunet_predictor.py [--image ../shared/sct_testing_data/t2s/t2s.nii.gz] [--repeats 3]
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
sys.path.insert(0, str(ROOT / "tests"))  # the synthetic models and DICOM series of the tests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=ROOT.parent / "shared" / "sct_testing_data" / "t2" / "t2_fake_lesion.nii.gz")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import onnxruntime as ort
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from lesionseg.client.transport import Transport, TransportSettings
    from lesionseg.core.nifti import load_nifti
    from lesionseg.core.orientation import reorientation, sct_to_nib
    from lesionseg.export.nnunet import export_nnunet
    from synthetic_nnunet import REALISTIC, make_model
    from lesionseg.server.launch.embedded import EmbeddedServer, ServerSettings, free_ports
    from lesionseg.server.pipelines import nnunet

    with tempfile.TemporaryDirectory() as tmp:
        folder = make_model(Path(tmp) / "model", REALISTIC)
        repo = Path(tmp) / "repo"
        plan = export_nnunet(folder, repo, task="bench").plan
        image = load_nifti(args.image)
        orient = reorientation(image.affine, image.data.shape, sct_to_nib(plan.orientation))
        data = orient.forward(image.data)
        spacing = orient.forward_spacing(image.spacing)

        # bare network on the very tiles the sliding window sends
        session = ort.InferenceSession(str(repo / plan.networks[0] / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        pre, _ = nnunet.preprocess(data, spacing, plan)
        captured: list[np.ndarray] = []
        nnunet.sliding_window(pre, plan, lambda t: captured.append(t) or np.zeros((len(t), plan.num_classes, *plan.patch_size), np.float32))
        tiles = captured[0]

        def bare() -> None:
            for i in range(0, len(tiles), 2):
                session.run(None, {"input": tiles[i : i + 2]})

        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False, device=torch.device("cpu"),
                                    verbose=False, verbose_preprocessing=False, allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(folder), use_folds=("0",))

        def oracle() -> None:
            predictor.predict_single_npy_array(data.transpose(2, 1, 0)[None].astype(np.float32), {"spacing": list(spacing[::-1])})

        grpc, http, metrics = free_ports(3)
        settings = ServerSettings(repository=repo, grpc_port=grpc, http_port=http, metrics_port=metrics)
        with EmbeddedServer(settings), Transport(settings.grpc_url, TransportSettings(transport="grpc")) as link:
            inputs = {"IMAGE": np.ascontiguousarray(data, np.float32), "SPACING": np.asarray(spacing, np.float32)}

            def triton() -> None:
                link.infer("bench", inputs, ["SEG"], source=args.image)

            timings = {}
            for name, fn in (("triton", triton), ("nnunetv2", oracle), ("bare", bare)):
                fn()  # warm-up
                runs = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    fn()
                    runs.append(time.perf_counter() - t0)
                timings[name] = statistics.median(runs)

    print(f"nnU-Net seg_ms_lesion-sized model (patch {list(plan.patch_size)}), image {args.image.name} "
          f"{list(data.shape)}, {len(tiles)} tiles, median of {args.repeats} runs (this machine)")
    for name in ("triton", "nnunetv2", "bare"):
        print(f"  {name:9s} {timings[name]:8.2f} s")
    print(f"  nnunetv2 / triton = {timings['nnunetv2'] / timings['triton']:.2f}  (lesionseg speed-up over nnU-Net's predictor)")
    print(f"  bare / triton     = {timings['bare'] / timings['triton']:.2f}  (share of the time spent in the network itself)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
