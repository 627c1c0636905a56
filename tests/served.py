"""Library calls the end-to-end tests share: one image through a job on a live server, as a program
using lesionseg's client library would make them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lesionseg.client.images import load_image
from lesionseg.client.inference import send
from lesionseg.client.legacy import LegacyJob
from lesionseg.client.result import Outputs, Result
from lesionseg.client.servers import open_servers
from lesionseg.client.transport import TransportSettings
from lesionseg.client.writer import Writer
from lesionseg.core.image import Image
from lesionseg.core.interface import Tensor


def legacy(url: str, path: Path, contrast: str, *, ofolder: Path, centerline: Path | None = None,
           settings: TransportSettings | None = None) -> tuple[Result, Outputs]:
    """`deepseg-lesion` of one image, its NIfTI outputs and sidecars written into `ofolder`."""
    with open_servers(url, settings) as servers:
        job = LegacyJob(servers=servers, contrast=contrast, centerline=str(centerline) if centerline else None)
        writer = Writer()
        outputs = writer.outputs(job, path, ofolder)
        result = job.segment(load_image(path))
        writer.write(result, outputs)
    return result, outputs


def infer_task(url: str, image: Image | Path, task: str, *, settings: TransportSettings | None = None,
               options: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """A task model's own answer for an image on its own grid: labels (uint8 (x, y, z)), foreground
    probabilities (uint8 0-255, (C - 1, x, y, z)), and the served model's parameters; `options`:
    the task's optional inputs (TTA, FOLDS)."""
    image = image if isinstance(image, Image) else load_image(image)
    with open_servers(url, settings) as servers:
        info = servers.model(task)
        reply, _ = servers.run(lambda server: send(server, info, image, outputs=[Tensor.SEG, Tensor.PROB], options=options))
    prob = np.stack([reply.orient.backward(p) for p in reply.outputs[Tensor.PROB]])
    return reply.back(Tensor.SEG), prob, info.parameters
