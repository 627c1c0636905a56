"""The `lesionseg` command line: argument parsing and exit codes only. Each command module
declares its parser and calls one library function; `main` is the one place where
`LesionsegError`s become messages and exit codes."""

from lesionseg.client.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
