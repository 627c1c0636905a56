"""Test support: nnU-Net test models trained for a few minutes on the real images, so that their
masks are compact like a real model's (random weights put most voxels near the decision boundary:
fragmented masks, whose lesion counts no reduced precision can keep).

`train_model` takes a model folder written by `tests/synthetic_nnunet.make_model` and trains each
fold's network in place (its `checkpoint_final.pth` rewritten) on the spinal cord masks of
`../shared/sct_testing_data` (the images with a cord mask, and t2s_uncropped with t2s's mask
resampled onto it; the folds differ by their seeds). The data go through lesionseg's own nnU-Net preprocessing with the model's plan (nnU-Net's
steps, checked against nnunetv2 by the tests), so the network learns on what it is fed at
inference. Deterministic for a given seed and step count on one machine: random foreground-centred
patches (two in three), cross-entropy plus soft Dice of the foreground, Adam with nnU-Net's
polynomial learning-rate decay. The class the
network learns is the model's first foreground class (the cord here, whatever its name).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Sequence

import numpy as np

#: (image, cord mask) pairs of ../shared/sct_testing_data
CORD_PAIRS = (
    ("t1/t1w.nii.gz", "t1/t1w_seg-manual.nii.gz"),
    ("t2/t2.nii.gz", "t2/t2_seg-manual.nii.gz"),
    ("t2s/t2s.nii.gz", "t2s/t2s_seg.nii.gz"),
    ("t2/t2_fake_lesion.nii.gz", "t2/t2_fake_lesion_sc_seg.nii.gz"),
    ("t2s/t2s_uncropped.nii.gz", "t2s/t2s_seg.nii.gz"),  # the mask of the cropped t2s, resampled onto it
)


#: a region-based model's inner region (the lesion of SCT's `sc: [1, 2]`, `lesion: 2`): the cord's
#: core, its voxels farther than this from the cord's edge (mm; the cord's radius is 3-5 mm)
CORE_MM = 1.5


def training_volumes(data_root: Path, plan, pairs: Sequence[tuple[str, str]] = CORD_PAIRS) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each pair as the network sees it: (preprocessed image (Z', Y', X') float32, labels (Z', Y',
    X') uint8: 0 outside the cord, 1 cord, 2 the cord's core (`CORE_MM`)). Axes: nnU-Net's
    transposed order; a 2D plan's slices are the first axis."""
    from scipy.ndimage import distance_transform_edt

    from lesionseg.core.nifti import load_nifti
    from lesionseg.core.orientation import reorientation, sct_to_nib
    from lesionseg.server.pipelines import nnunet
    from lesionseg.server.pipelines.nnunet_resample import resample

    import nibabel as nib
    from nibabel.processing import resample_from_to

    volumes = []
    for image_name, mask_name in pairs:
        image, mask = load_nifti(data_root / image_name), load_nifti(data_root / mask_name)
        if mask.data.shape != image.data.shape or not np.allclose(mask.affine, image.affine, atol=1e-3):
            moved = resample_from_to(nib.Nifti1Image((mask.data > 0).astype(np.float32), mask.affine),
                                     (image.data.shape, image.affine), order=1)
            mask = mask.with_data(np.asarray(moved.dataobj) > 0.5, affine=image.affine)
        orient = reorientation(image.affine, image.data.shape, sct_to_nib(plan.orientation))
        spacing = orient.forward_spacing(image.spacing)
        data, props = nnunet.preprocess(orient.forward(image.data).astype(np.float32), spacing, plan)
        labels = orient.forward((mask.data > 0).astype(np.float32)).transpose(2, 1, 0)[None]
        labels = labels.transpose([0, *[i + 1 for i in plan.transpose_forward]])
        labels = labels[(slice(None), *[slice(a, b) for a, b in props.bbox])]
        labels = resample(labels, data.shape[1:], props.spacing, plan.target_spacing(props.spacing),
                          order=1, order_z=0, force_separate_z=None)[0] > 0.5
        spacing_after = plan.target_spacing(props.spacing)
        # the core in the slices' plane for a 2D plan (its slices are segmented one by one)
        depth = distance_transform_edt(labels, sampling=spacing_after) if len(plan.patch_size) == 3 else \
            np.stack([distance_transform_edt(s, sampling=spacing_after[1:]) for s in labels])
        volumes.append((data[0], labels.astype(np.uint8) + (depth > CORE_MM)))
    return volumes


def _patch(volume: np.ndarray, labels: np.ndarray, size: Sequence[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A patch of `size` (zero-padded where the volume is smaller), centred on a foreground voxel
    two times in three."""
    pad = [(0, max(0, s - d)) for s, d in zip(size, volume.shape)]
    volume, labels = np.pad(volume, pad), np.pad(labels, pad)
    foreground = np.argwhere(labels)
    if len(foreground) and rng.random() < 2 / 3:
        centre = foreground[rng.integers(len(foreground))]
        start = [int(np.clip(c - s // 2, 0, d - s)) for c, s, d in zip(centre, size, volume.shape)]
    else:
        start = [int(rng.integers(0, d - s + 1)) for s, d in zip(size, volume.shape)]
    window = tuple(slice(a, a + s) for a, s in zip(start, size))
    return volume[window], labels[window]


def train_network(network, volumes: list[tuple[np.ndarray, np.ndarray]], *, steps: int, patch: Sequence[int], seed: int,
                  batch: int = 2, lr: float = 1e-3, foreground_class: int = 1,
                  regions: Sequence[Sequence[int]] = ()):
    """Train `network` (a torch module: (N, 1, *patch) -> (N, C, *patch) logits) in place; returns
    the last step's loss. `volumes`: `training_volumes`'s. A 2D `patch` (Y', X') takes one slice of
    the first axis. Softmax heads: the cord is class `foreground_class` (cross-entropy plus soft
    Dice). `regions` (a region-based model): each head's label values (sigmoid heads, binary
    cross-entropy plus soft Dice per head, nnU-Net's region losses)."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    network.train()
    optimiser = torch.optim.Adam(network.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: (1 - step / steps) ** 0.9)  # nnU-Net's poly decay
    size = tuple(patch) if len(patch) == 3 else (1, *patch)
    loss_value = float("nan")

    def soft_dice(probability, target):
        return 1 - (2 * (probability * target).sum() + 1) / (probability.sum() + target.sum() + 1)

    for _ in range(steps):
        pairs = [_patch(*volumes[rng.integers(len(volumes))], size, rng) for _ in range(batch)]
        images = np.stack([p[0] for p in pairs])[:, None].astype(np.float32)
        labels = np.stack([p[1] for p in pairs])
        if len(patch) == 2:
            images, labels = images[:, :, 0], labels[:, 0]
        logits = network(torch.from_numpy(images))
        if regions:
            targets = torch.from_numpy(np.stack([np.isin(labels, values) for values in regions], 1).astype(np.float32))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
            loss = loss + sum(soft_dice(torch.sigmoid(logits[:, h]), targets[:, h]) for h in range(len(regions))) / len(regions)
        else:
            y = torch.from_numpy((labels > 0).astype(np.int64) * foreground_class)
            probability = torch.softmax(logits, 1)[:, foreground_class]
            loss = torch.nn.functional.cross_entropy(logits, y) + soft_dice(probability, (y == foreground_class).float())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        loss_value = float(loss.detach())
    return network.eval(), loss_value


def train_model(folder: Path, data_root: Path, *, steps: int, patch: Sequence[int], seed: int = 0,
                cross_validation: bool = False) -> dict[str, float]:
    """Train every fold of the model folder in place (see the module docstring); returns each
    fold's last loss. `patch`: the training patch ((Z', Y', X'), or (Y', X') for a 2D model; each a
    multiple of the network's total stride; smaller than the plan's to keep a step cheap on a CPU).
    `cross_validation`: fold k leaves out the k-th image (modulo their number), as nnU-Net's folds
    leave out a part of the data, so that the folds disagree where a real ensemble's would."""
    import torch

    from lesionseg.export.nnunet import build_network, labels_of, load_folder, load_trainer_class, make_plan
    from lesionseg.export.torch_onnx import load_checkpoint

    model = load_folder(folder)
    plan = make_plan(model, networks=["training"], mirror_axes=(), use_mirroring=False)
    volumes = training_volumes(data_root, plan)
    labels = labels_of(model.dataset)
    regions = list(labels.values.values()) if labels.regions_class_order else ()  # in the heads' order
    template = build_network(model, load_trainer_class(model))
    losses = {}
    for k, (fold, path) in enumerate(sorted(model.checkpoints.items())):
        checkpoint = load_checkpoint(path)
        network = copy.deepcopy(template)
        network.load_state_dict(checkpoint["network_weights"])
        data = [v for i, v in enumerate(volumes) if i != k % len(volumes)] if cross_validation else volumes
        started = time.perf_counter()
        network, losses[fold] = train_network(network, data, steps=steps, patch=patch, seed=seed * 100 + k, regions=regions)
        checkpoint["network_weights"] = network.state_dict()
        checkpoint["training"] = {"steps": steps, "patch": list(patch), "seconds": time.perf_counter() - started,
                                  "data": "sct_testing_data cord masks", "loss": losses[fold],
                                  "left_out": CORD_PAIRS[k % len(volumes)][0] if cross_validation else None}
        torch.save(checkpoint, path)
    return losses
