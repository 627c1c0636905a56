"""Triton Python-backend entry point of `deepseg_lesion_t2s_net`; the code lives in `lesionseg.server.backend.onnx_network`."""

from lesionseg.server.backend.onnx_network import OnnxNetModel as TritonPythonModel  # noqa: F401
