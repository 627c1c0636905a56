"""SCT 7's nnU-Net inference, run by SCT's own nnU-Net fork (nnunetv2-neuropoly 2.6.2): the
oracle of the SCT 7 task tests.

Run in a subprocess with the fork first on PYTHONPATH (it is imported as `nnunetv2`, the name the
tests' own nnunetv2 holds):

    python tests/nnunet_fork_oracle.py MODEL_DIR IN.npz OUT.npz [--ensemble] [--single-fold] [--tta] [--soft]

IN.npz holds `data` (z, y, x) float32 and `spacing` (z, y, x) mm: the image reoriented to the
model's orientation and transposed, as SCT's `segment_nnunet` hands it to the predictor. The steps
follow SCT master's `deepseg/nnunet.py::create_nnunet_from_plans` (the folds of the one
`nnUNetTrainer*` folder, fold 1 for `-single-fold`, checkpoint_final before checkpoint_best, tile
step 0.5, gaussian, mirroring only with `-test-time-aug`, everything on the CPU, the folder's
`trainer_class.py` imported and its `get_trainer_class()` handed to the predictor) and
`deepseg/inference.py::segment_nnunet` (`predict_single_npy_array`, with the per-fold answers of
`return_logits_per_fold` for the lesion_ms ensemble, averaged as `average_nnunet_predictions`
does). One deliberate difference: SCT takes the folds in `glob` order, which the file system
decides; here they are sorted (fold 0 first), so that the fork's first-fold weighting is
reproducible. OUT.npz holds `pred` (z, y, x): labels, the ensemble's mean > 0.5, or the soft map.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def predictor(model_dir: Path, *, single_fold: bool, tta: bool):
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    trainers = sorted(model_dir.glob("nnUNetTrainer*"))
    if len(trainers) != 1:
        raise SystemExit(f"{model_dir}: expected one nnUNetTrainer* folder, found {len(trainers)}")
    trainer = trainers[0]
    names = sorted(p.name for p in trainer.glob("fold_*"))
    folds = "all" if names == ["fold_all"] else [int(n.split("_")[-1]) for n in names]
    if single_fold:
        folds = [1] if 1 in folds else [folds[0]]
    found = {p.name for p in trainer.glob("**/checkpoint_*.pth")}
    checkpoint = next(c for c in ("checkpoint_final.pth", "checkpoint_best.pth") if c in found)
    made = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=tta, perform_everything_on_device=False,
                           device=torch.device("cpu"), verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    made.initialize_from_trained_model_folder(str(trainer), use_folds=folds, checkpoint_name=checkpoint,
                                              trainer_class=trainer_class_of(trainer))
    return made


def trainer_class_of(trainer: Path):
    """SCT's `load_trainer_class_if_available`: the folder's trainer_class.py, imported, and what
    its `get_trainer_class()` returns (None without the file or the function)."""
    import importlib.util

    path = trainer / "trainer_class.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("trainer_class", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_trainer_class() if hasattr(module, "get_trainer_class") else None


def ensemble_mean(pred, *, soft: bool) -> np.ndarray:
    """The lesion_ms ensemble: the folds' label maps averaged and kept above 0.5, or (soft) each
    fold's class-1 probability where it beats class 0, averaged."""
    if soft:
        probabilities = pred[1]
        total = np.zeros_like(probabilities[0][1])
        for p in probabilities:
            total += np.where(p[1] > p[0], p[1], 0)
        return total / len(probabilities)
    return (np.sum(pred, axis=0) / len(pred)) > 0.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("inputs", type=Path)
    parser.add_argument("output", type=Path)
    for flag in ("--ensemble", "--single-fold", "--tta", "--soft"):
        parser.add_argument(flag, action="store_true")
    args = parser.parse_args(argv)
    import nnunetv2

    beside = Path(nnunetv2.__file__).resolve().parent.parent
    if not any(beside.glob("nnunetv2_neuropoly-*.dist-info")):
        raise SystemExit(f"nnunetv2 comes from {nnunetv2.__file__}, not SCT's fork (put nnunetv2-neuropoly first on PYTHONPATH)")
    loaded = np.load(args.inputs)
    made = predictor(args.model_dir, single_fold=args.single_fold, tta=args.tta)
    pred = made.predict_single_npy_array(loaded["data"][None].astype(np.float32), {"spacing": [float(s) for s in loaded["spacing"]]},
                                         save_or_return_probabilities=args.soft, return_logits_per_fold=args.ensemble)
    if args.ensemble:
        pred = ensemble_mean(pred, soft=args.soft)
    elif args.soft:
        pred = pred[1]
    np.savez(args.output, pred=np.asarray(pred))
    return 0


if __name__ == "__main__":
    sys.exit(main())
