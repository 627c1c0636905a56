"""The one layer of exceptions of lesionseg, and the exit code each one maps to.

`lesionseg.client.cli.main` is the only place that turns them into exit codes:
0 ok, 1 runtime failure, 2 usage, 3 server unavailable.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


class LesionsegError(Exception):
    """A failure the user can act on; its message is one line, shown without a traceback."""

    exit_code = EXIT_FAILURE


class UsageError(LesionsegError):
    """Bad command-line usage or a bad argument value (exit code 2)."""

    exit_code = EXIT_USAGE


class OutputExistsError(UsageError):
    """An output file exists and --overwrite was not given (nothing was written)."""


class InputError(LesionsegError):
    """A file the user gave cannot be used (missing, unreadable, malformed)."""


class RepositoryError(LesionsegError):
    """A Triton model repository is missing or invalid."""


class ServerStartError(LesionsegError):
    """The embedded Triton server could not start or did not become ready."""


class ServerUnavailableError(LesionsegError):
    """No Triton server answers at the given address (exit code 3)."""

    exit_code = EXIT_UNAVAILABLE


class InferenceError(LesionsegError):
    """The server answered a request with an error."""


class ExportError(LesionsegError):
    """A checkpoint cannot be converted (unknown layer, unsupported architecture, parity failure)."""


class ModelNotFoundError(LesionsegError):
    """A model the command needs is not installed or not served."""
