"""The one-shot MP2RAGE workflow: cord segmentation -> crop around the cord -> lesion segmentation
-> result pasted back into the input grid.

SCT's recipe crops with `-dilate 30x30x5` voxels on ~1 mm MP2RAGE images. Here the dilation is
30 mm left-right, 30 mm antero-posterior and 5 mm along the cord (scaled for the voxel size and
applied along the axes those directions map to in the input array), so it means the same on any
resolution and orientation.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from lesionseg.client.crop import Box, cropped_affine, mask_box, uncrop
from lesionseg.client.task import PostOptions, TaskResult, class_masks, infer_task, output_paths, write_outputs
from lesionseg.core.errors import InferenceError
from lesionseg.client.nifti import Volume, load_volume, refuse_existing
from lesionseg.client.orientation import axcodes
from lesionseg.client.session import open_transport

CORD_TASK = "seg_sc_contrast_agnostic"
DILATION_MM = {"LR": 30.0, "AP": 30.0, "SI": 5.0}


def dilation_for(image: Volume) -> tuple[int, int, int]:
    """Voxels per array axis for 30 mm (R-L), 30 mm (A-P), 5 mm (S-I)."""
    out = []
    for code, spacing in zip(axcodes(image.affine), image.spacing):
        direction = "LR" if code in "LR" else ("AP" if code in "AP" else "SI")
        out.append(int(np.ceil(DILATION_MM[direction] / spacing - 1e-9)))
    return tuple(out)  # type: ignore[return-value]


def segment_cropped_to_cord(image_path: Path, task: str, *, output: Path | None = None, url: str | None = None,
                            options: PostOptions = PostOptions(), cord_task: str = CORD_TASK,
                            overwrite: bool = False, transport=None, ofolder: Path | None = None) -> TaskResult:
    image = load_volume(image_path)
    if output is not None:
        refuse_existing([output], overwrite=overwrite)
    with open_transport(url, transport) as link:  # one server for both calls
        cord, _, _ = infer_task(image, cord_task, transport=link)
        if not np.any(cord):
            raise InferenceError(f"{image_path}: {cord_task} found no spinal cord; cannot crop around it")
        box: Box = mask_box(cord, dilation_for(image))
        cropped = Volume(path=image.path, data=np.ascontiguousarray(image.data[box.slices]),
                         affine=cropped_affine(image.affine, box), header=image.header)
        seg, prob, params = infer_task(cropped, task, probabilities=True, transport=link)
    labels = json.loads(params["plan"])["labels"]
    paths = output_paths(image_path, task, labels, output, ofolder=ofolder)
    refuse_existing(paths.values(), overwrite=overwrite)
    masks = class_masks(seg, prob, params, paths, task=task, options=options, spacing=image.spacing,
                        to_grid=lambda m: uncrop(m, box, image.data.shape))
    write_outputs(masks, paths, image, task=task, argv=None,
                  params={**params, "source": params.get("source", "") + f" (cropped around {cord_task})"})
    return TaskResult(files=paths, labels=labels, masks=masks)
