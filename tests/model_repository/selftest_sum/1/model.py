"""Triton Python-backend entry point of `selftest_sum`; the code lives in `lesionseg.server.backend.selftest`."""

from lesionseg.server.backend.selftest import SumModel as TritonPythonModel  # noqa: F401
