"""Triton Python-backend entry point of `deepseg_lesion_t2_ax`; the code lives in `lesionseg.server.backend.deepseg_lesion`."""

from lesionseg.server.backend.deepseg_lesion import DeepsegLesionModel as TritonPythonModel  # noqa: F401
