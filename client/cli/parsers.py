"""argparse as every lesionseg command uses it: one-line usage errors under exit code 2, and help
epilogs (examples, exit codes) kept as written."""

from __future__ import annotations

import argparse
import sys

from lesionseg.core.errors import EXIT_USAGE


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors under our exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def command(sub: argparse._SubParsersAction, name: str, *, help: str, epilog: str = "") -> argparse.ArgumentParser:
    """A (sub)command's parser, its epilog printed as written."""
    return sub.add_parser(name, help=help, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)


def subcommands(parser: argparse.ArgumentParser, *, dest: str, metavar: str) -> argparse._SubParsersAction:
    """The required subcommands of `parser` (e.g. `models install`, `export nnunet`)."""
    actions = parser.add_subparsers(dest=dest, metavar=metavar, parser_class=Parser)
    actions.required = True
    return actions
