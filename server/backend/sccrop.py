"""The Python-backend model `sccrop`: sc-crop's cord box (`lesionseg.server.pipelines.sccrop`) with
its two networks called by BLS: the detector (`sccrop_detector`, one request per slice, all in
flight at once, batch 1 as the package runs it) and the classifier (`sccrop_classifier`, asked
lazily, slice by slice, in the package's order).

IMAGE (x, y, z) FP32 as stored (nibabel's dataobj values), AFFINE (4, 4) FP64, SPACING (3,) FP32
header zooms in mm, PADDING (6,) FP32 mm in `PAD_KEYS` order -> BOX (6,) INT64 inclusive voxel
indices (xmin, xmax, ymin, ymax, zmin, zmax) on IMAGE's own axes. No cord: a per-request error.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from lesionseg.core.interface import Tensor
from lesionseg.server.backend.base import PythonModel, RequestError, _pb_utils
from lesionseg.server.backend.bls import run_network
from lesionseg.server.pipelines import sccrop

#: the order of BOX
FACES = ("xmin", "xmax", "ymin", "ymax", "zmin", "zmax")


class SccropModel(PythonModel):
    def setup(self, config: Mapping[str, Any]) -> None:
        p = self.parameters
        self.detector = p.get("detector", "sccrop_detector")
        self.classifier = p.get("classifier", "sccrop_classifier")
        self.detector_io = (p.get("detector_input", "images"), p.get("detector_output", "output0"))
        self.classifier_io = (p.get("classifier_input", "images"), p.get("classifier_output", "output0"))

    def detect(self, slices: np.ndarray) -> list[sccrop.Detection | None]:
        """Each (AP, RL, 3) uint8 slice's best detection (the detector, one request per slice)."""
        if not len(slices):
            return []
        inputs = [sccrop.detector_input(s) for s in slices]
        shape = inputs[0].shape[2:]
        batch = np.concatenate(inputs)
        outputs = run_network(self.detector, batch, 1, input_name=self.detector_io[0], output_name=self.detector_io[1])
        return [sccrop.best_detection(out, shape, s.shape) for out, s in zip(outputs, slices)]

    def cord_probability(self, slice_: np.ndarray) -> float:
        pb_utils = _pb_utils()
        request = pb_utils.InferenceRequest(model_name=self.classifier, requested_output_names=[self.classifier_io[1]],
                                            inputs=[pb_utils.Tensor(self.classifier_io[0], sccrop.classifier_input(slice_))])
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"{self.classifier}: {response.error().message()}")
        out = pb_utils.get_output_tensor_by_name(response, self.classifier_io[1]).as_numpy()
        return float(out.reshape(-1)[sccrop.CORD_CLASS])

    def process(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        image, affine = inputs[Tensor.IMAGE], np.asarray(inputs[Tensor.AFFINE], np.float64)
        zooms, pads = inputs[Tensor.SPACING].reshape(-1), inputs[Tensor.PADDING].reshape(-1)
        if image.ndim != 3 or affine.shape != (4, 4) or zooms.shape != (3,) or pads.shape != (len(sccrop.PAD_KEYS),):
            raise RequestError(f"expected IMAGE (x, y, z), AFFINE (4, 4), SPACING (3,), PADDING ({len(sccrop.PAD_KEYS)},); got "
                               f"{image.shape}, {affine.shape}, {zooms.shape}, {pads.shape}")
        if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise RequestError("AFFINE is singular or not finite")
        try:
            padding = sccrop.Padding.from_metadata(dict(zip(sccrop.PAD_KEYS, (float(v) for v in pads))), source="PADDING")
            faces = sccrop.cord_box(image, affine, tuple(float(z) for z in zooms), padding=padding, detect=self.detect,
                                    cord_probability=self.cord_probability)
        except ValueError as exc:
            raise RequestError(str(exc)) from None
        return {Tensor.BOX: np.array([faces[f] for f in FACES], np.int64)}
