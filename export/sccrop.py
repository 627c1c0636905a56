"""`lesionseg models install sc-crop`: sc-crop's two ONNX networks (release v0.0.11 of
ivadomed/sc-crop, the weights SCT 7 runs through the `sc-crop` package) into the repository as
`sccrop_detector` and `sccrop_classifier`, with the `sccrop` model that runs the package's steps.

Downloads are pinned to the package's own SHA-256 (sc_crop/download.py); a local folder holding
other weights (tests, a retrained detector) is installed with a warning that they are not the
release's.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from lesionseg.core.enums import Runtime
from lesionseg.core.errors import InputError, ModelNotFoundError
from lesionseg.core.files import sha256
from lesionseg.core.paths import cache_dir, user_path

if TYPE_CHECKING:
    from lesionseg.export.networks import Serving

logger = logging.getLogger(__name__)

#: sc-crop 0.12.1's model release and the SHA-256 it checks each file against
MODEL_VERSION = "v0.0.11"
RELEASE_PATH = f"ivadomed/sc-crop/releases/download/{MODEL_VERSION}"
WEIGHTS = {
    "det_model.onnx": "052abe794f3878422e2acc2df4e4942f995aab3788ad513bbcc92b66b16ee9c0",
    "cls_model.onnx": "25fc911e501ae944dbfb66546e36d32f26021e35506c2495b0f71d4ff6bf3d6b",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class SccropInstall:
    source: str
    released: bool  # the files are the v0.0.11 release's (checksums match)


def fetch_weights(*, base_url: str | None = None, progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Download (or reuse) the release's two files, each checked against its pinned SHA-256."""
    from lesionseg.export.install import GITHUB, DownloadError, download

    folder = cache_dir() / "downloads" / f"sc-crop-{MODEL_VERSION}"
    base = (base_url or os.environ.get("LESIONSEG_RELEASES_URL") or GITHUB).rstrip("/")
    for name, digest in WEIGHTS.items():
        target = folder / name
        if not target.exists() or sha256(target) != digest:
            download(f"{base}/{RELEASE_PATH}/{name}", target, progress=progress)
        if sha256(target) != digest:
            target.unlink()
            raise DownloadError(f"{base}/{RELEASE_PATH}/{name}: checksum mismatch (expected sha256 {digest[:12]}...)")
    return folder


def _io_names(model, path: Path) -> tuple[str, str]:
    if len(model.graph.input) != 1 or not model.graph.output:
        raise InputError(f"{path}: expected one input and an output (sc-crop's ONNX export)")
    return model.graph.input[0].name, model.graph.output[0].name


def install_sccrop(source: str | None, repository: Path, *, serving: Serving | None = None,
                   progress: Callable[[int, int | None], None] | None = None) -> SccropInstall:
    """Install sc-crop's networks from the release (None), an http(s) base URL of a mirror of the
    release folder, or a local folder holding det_model.onnx and cls_model.onnx. `serving`: the
    command's backend; FP32 only (no parity report yet); the embedded server's Python backend runs
    them on ONNX Runtime, as the package does. With --target gpu each network also gets its GPU
    variant (`configs/gpu.pbtxt`): the detector's TensorRT profile covers its letterboxed slabs
    (32 to 320 pixels a side, tuned for 320), the classifier's its fixed 1 x 3 x 320 x 320.

    Raises:
        UsageError: a reduced precision; DownloadError, ModelNotFoundError, InputError.
    """
    import onnx

    from lesionseg.export.networks import Serving, write_network
    from lesionseg.server.repository.sccrop import network_entries, write_sccrop

    serving = serving or Serving()
    serving.require_fp32("sc-crop")
    serving = dataclasses.replace(serving, runtime=Runtime.ONNXRUNTIME)

    if source is None or urllib.parse.urlparse(source).scheme in ("http", "https"):
        folder = fetch_weights(base_url=source, progress=progress)
        recorded = f"{(source or 'https://github.com').rstrip('/')}/{RELEASE_PATH}"
    else:
        folder = user_path(source)
        recorded = str(folder)
    missing = [name for name in WEIGHTS if not (folder / name).is_file()]
    if missing:
        raise ModelNotFoundError(f"{folder}: no {' or '.join(missing)} (sc-crop's networks)")
    released = all(sha256(folder / name) == digest for name, digest in WEIGHTS.items())
    if not released:
        logger.warning("%s: these are not sc-crop %s's released weights (checksums differ)", folder, MODEL_VERSION)
    try:
        models = {name: onnx.load(str(folder / name)) for name in WEIGHTS}
    except Exception as exc:  # noqa: BLE001 - onnx raises several kinds for a bad file
        raise InputError(f"{folder}: not ONNX models ({exc})") from None
    detector_io, classifier_io = (_io_names(models[n], folder / n) for n in WEIGHTS)
    detector, classifier = network_entries(detector_io=detector_io, classifier_io=classifier_io)
    for entry, name in ((detector, "det_model.onnx"), (classifier, "cls_model.onnx")):
        write_network(entry, models[name], repository, serving=serving, record={"source": recorded, "file": name,
                                                                                   "sha256": sha256(folder / name), "released": released})
    write_sccrop(repository, source=recorded, detector_io=detector_io, classifier_io=classifier_io)
    return SccropInstall(source=recorded, released=released)
