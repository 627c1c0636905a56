"""Triton Python-backend entry point of `selftest_scale`; the code lives in `lesionseg.server.backend.selftest`."""

from lesionseg.server.backend.selftest import ScaleModel as TritonPythonModel  # noqa: F401
