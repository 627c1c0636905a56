"""Triton Python-backend entry point of `deepseg_lesion_t2`; the code lives in `lesionseg.server.backend.legacy`."""

from lesionseg.server.backend.legacy import LegacyPipelineModel as TritonPythonModel  # noqa: F401
