"""The `lesionseg` command line: one parser factory, one `main`, and the one place where
`LesionsegError`s become messages and exit codes (0 ok, 1 failure, 2 usage, 3 server unavailable)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from lesionseg.client.cli import crop, deepseg, deepseg_lesion, dicom2nifti, export, gateway, models, qc, repository, serve, status
from lesionseg.client.cli.parsers import Parser, subcommands
from lesionseg.core import __version__
from lesionseg.core.errors import EXIT_FAILURE, EXIT_OK, LesionsegError

EPILOG = """\
exit codes: 0 ok, 1 runtime failure, 2 usage error, 3 server unavailable

examples:
  lesionseg models install sct-legacy --from ../shared/sct_models
  lesionseg deepseg-lesion -i t2s.nii.gz -c t2s
  lesionseg serve --repository model_repository
  lesionseg status --url 127.0.0.1:8001
  lesionseg repository check model_repository
"""

COMMANDS = (deepseg, deepseg_lesion, dicom2nifti, gateway, crop, models, export, serve, status, repository, qc)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="lesionseg",
        description="MS lesion segmentation of spinal-cord MRI (SCT models) on NVIDIA Triton.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="count", default=0, help="more log output (repeat for debug)")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="only errors")
    sub = subcommands(parser, dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


class _PrintableFormatter(logging.Formatter):
    """Log lines with control characters escaped, line by line (values from DICOM peers and files
    reach the messages: they must not drive the operator's terminal); tracebacks keep their lines."""

    def format(self, record: logging.LogRecord) -> str:
        from lesionseg.core.text import printable

        return "\n".join(printable(line) for line in super().format(record).split("\n"))


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


def main(argv: Sequence[str] | None = None) -> int:
    """Run one lesionseg command; returns the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return int(exc.code or 0)
    _configure_logging(args.verbose, args.quiet)
    try:
        return int(args.run(args) or 0)
    except LesionsegError as exc:
        print(f"lesionseg: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # output piped into `head` and closed early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print("lesionseg: interrupted", file=sys.stderr)
        return EXIT_FAILURE
