"""Triton Python-backend entry point of `deepseg_lesion_t2_ax`; the code lives in `lesionseg.server.backend.legacy`."""

from lesionseg.server.backend.legacy import LegacyPipelineModel as TritonPythonModel  # noqa: F401
