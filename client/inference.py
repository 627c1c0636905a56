"""One volume through a served model, in the model's orientation.

Every segmentation request goes the same way: read the orientation the model's config names
(SCT's code, e.g. "RPI"), reorient the image's (x, y, z) array to it, send it with its voxel size
in mm (the header's pixdim, reordered with the axes) as IMAGE and SPACING, and check that the
answer's masks have the shape that was sent. The caller orients the answer back with
`Reply.orient.backward` (or keeps the model orientation, as the legacy `_RPI_seg` outputs do).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import numpy as np

from lesionseg.client.connection import Connection
from lesionseg.core.image import Image
from lesionseg.core.orientation import Reorientation, reorientation, sct_to_nib
from lesionseg.core.errors import InferenceError


@dataclasses.dataclass(frozen=True, kw_only=True)
class Reply:
    """A model's answer for one volume: its `outputs` (name -> array, model orientation), the
    `orient`ation the volume was sent in, what was sent (`data` (x, y, z) FP32, `spacing` (3,) mm)
    and the model's config `parameters`."""

    outputs: dict[str, np.ndarray]
    orient: Reorientation
    data: np.ndarray
    spacing: np.ndarray
    parameters: dict[str, str]


def infer_volume(link: Connection, model: str, image: Image, *, default_orientation: str, outputs: Sequence[str],
                 grid_outputs: Sequence[str] = ("SEG",), extra_inputs: Mapping[str, np.ndarray] | None = None,
                 output_shapes: Callable[[tuple[int, ...]], Mapping[str, tuple[tuple[int, ...], np.dtype]]] | None = None
                 ) -> Reply:
    """Send `image` to `model` and return its `outputs`.

    Args:
        default_orientation: SCT code used when the model's config names none.
        grid_outputs: outputs that are uint8 volumes on the sent grid (checked, and sent back
            through shared memory when the connection uses it).
        extra_inputs: more (x, y, z) volumes on the image's grid (e.g. a centerline mask),
            reoriented like the image.
        output_shapes: the shapes and dtypes of other outputs known in advance, from the shape
            of the volume as sent (e.g. one row per slice).
    Raises:
        ModelNotFoundError: the model is not served; InferenceError: the server refused the
            request or answered with masks of the wrong shape; ServerUnavailableError.
    """
    params = link.parameters(model)
    orient = reorientation(image.affine, image.data.shape, sct_to_nib(params.get("orientation", default_orientation)))
    data = np.ascontiguousarray(orient.forward(image.data), dtype=np.float32)
    spacing = np.asarray(orient.forward_spacing(image.spacing), np.float32)
    inputs = {"IMAGE": data, "SPACING": spacing}
    for name, volume in (extra_inputs or {}).items():
        inputs[name] = np.ascontiguousarray(orient.forward(volume))
    shapes = {name: (data.shape, np.dtype(np.uint8)) for name in grid_outputs}
    shapes.update(output_shapes(data.shape) if output_shapes is not None else {})
    result = link.infer(model, inputs, list(outputs), source=image.path, output_shapes=shapes)
    for name in grid_outputs:
        if result[name].shape != data.shape:
            raise InferenceError(f"{image.path}: server returned a mask of shape {result[name].shape}, expected {data.shape}")
    return Reply(outputs=result, orient=orient, data=data, spacing=spacing, parameters=params)
