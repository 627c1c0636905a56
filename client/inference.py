"""One image through a served model, in the model's orientation.

Every segmentation request goes the same way: reorient the image's (x, y, z) array to the
orientation the model's config names (SCT's code, e.g. "RPI"), send it with its voxel size in mm
(the header's pixdim, reordered with the axes) as IMAGE and SPACING, and check that the answer's
masks have the shape that was sent. The caller orients what it keeps back with
`Reply.orient.backward` (the legacy `_RPI_seg` maps stay in the model's orientation).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import numpy as np

from lesionseg.client.servers import Server
from lesionseg.core.errors import InferenceError, InputError
from lesionseg.core.image import Image
from lesionseg.core.interface import ModelInfo, Tensor
from lesionseg.core.limits import LimitExceeded, check_resampled, resampled_shape
from lesionseg.core.orientation import Reorientation, reorientation, sct_to_nib


@dataclasses.dataclass(frozen=True, kw_only=True)
class Reply:
    """A model's answer for one image: its `outputs` (name -> array, model orientation), the
    `orient`ation the image was sent in and the `shape` of the array sent."""

    outputs: dict[str, np.ndarray]
    orient: Reorientation
    shape: tuple[int, int, int]

    def back(self, name: str) -> np.ndarray:
        """Output `name` (a volume on the sent grid) on the image's own grid and axes."""
        return self.orient.backward(self.outputs[name])


def send(server: Server, model: ModelInfo, image: Image, *, outputs: Sequence[str], grid_outputs: Sequence[str] = (Tensor.SEG,),
         extra_inputs: Mapping[str, np.ndarray] | None = None, options: Mapping[str, np.ndarray] | None = None,
         output_shapes: Callable[[tuple[int, ...]], Mapping[str, tuple[tuple[int, ...], np.dtype]]] | None = None) -> Reply:
    """Send `image` to `model` on `server` and return its `outputs`.

    Args:
        grid_outputs: outputs that are uint8 volumes on the sent grid (checked, and sent back
            through shared memory when the transport uses it).
        extra_inputs: more (x, y, z) volumes on the image's grid (e.g. a centerline mask),
            reoriented like the image.
        options: inputs sent as they are (an nnU-Net task's TTA and FOLDS).
        output_shapes: the shapes and dtypes of other outputs known in advance, from the shape
            of the volume as sent (e.g. one row per slice).
    Raises:
        InferenceError: the server refused the request or answered with masks of the wrong shape;
            ServerUnavailableError.
    """
    assert server.transport is not None  # the pool hands out answering servers only
    check_work(model, image)
    orient = reorientation(image.affine, image.data.shape, sct_to_nib(model.orientation))
    data = np.ascontiguousarray(orient.forward(image.data), dtype=np.float32)
    inputs = {Tensor.IMAGE: data, Tensor.SPACING: np.asarray(orient.forward_spacing(image.spacing), np.float32)}
    for name, volume in (extra_inputs or {}).items():
        inputs[name] = np.ascontiguousarray(orient.forward(volume))
    inputs.update({name: np.ascontiguousarray(value) for name, value in (options or {}).items()})
    shapes = {name: (data.shape, np.dtype(np.uint8)) for name in grid_outputs}
    shapes.update(output_shapes(data.shape) if output_shapes is not None else {})
    result = server.transport.infer(model.name, {str(k): v for k, v in inputs.items()}, [str(o) for o in outputs],
                                    source=image.path, output_shapes={str(k): v for k, v in shapes.items()})
    for name in grid_outputs:
        if result[name].shape != data.shape:
            raise InferenceError(f"{image.path}: server returned a mask of shape {result[name].shape}, expected {data.shape}")
    return Reply(outputs=result, orient=orient, shape=data.shape)  # type: ignore[arg-type]


def check_work(model: ModelInfo, image: Image) -> None:
    """Refuse, before anything is sent, an image that `model` would resample past the ceiling on
    voxels (`lesionseg.core.limits`; the server checks again before it allocates): the image in
    the model's orientation at the model's `resampled_spacing`.

    Raises:
        InputError: naming the file, the shape, the count and the limit.
    """
    target = model.resampled_spacing
    if target is None:
        return
    orient = reorientation(image.affine, image.data.shape, sct_to_nib(model.orientation))
    shape = tuple(int(n) for n in orient.forward_spacing(tuple(float(n) for n in image.data.shape)))  # axes permuted as the data
    try:
        check_resampled(resampled_shape(shape, orient.forward_spacing(image.spacing), target), what=f"{image.path}: the image")
    except LimitExceeded as exc:
        raise InputError(f"{exc} (model {model.name})") from None


def infer_labels(server: Server, model: ModelInfo, image: Image) -> np.ndarray:
    """A task's labels of `image` (uint8 (x, y, z), its own grid and axes): SEG only."""
    return send(server, model, image, outputs=[Tensor.SEG]).back(Tensor.SEG)
