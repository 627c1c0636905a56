"""Triton Python-backend entry point of `deepseg_lesion_t2_net`; the code lives in `lesionseg.server.backend.onnx_net`."""

from lesionseg.server.backend.onnx_net import OnnxNetModel as TritonPythonModel  # noqa: F401
