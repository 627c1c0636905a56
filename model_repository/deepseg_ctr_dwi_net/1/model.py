"""Triton Python-backend entry point of `deepseg_ctr_dwi_net`; the code lives in `lesionseg.server.backend.onnx_net`."""

from lesionseg.server.backend.onnx_net import OnnxNetModel as TritonPythonModel  # noqa: F401
