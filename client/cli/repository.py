"""`lesionseg repository check DIR`: static checks of a Triton model repository."""

from __future__ import annotations

import argparse
from pathlib import Path

from lesionseg.client.cli.parsers import command, subcommands
from lesionseg.core.errors import EXIT_OK, RepositoryError

HELP = """\
examples:
  lesionseg repository check model_repository

exit codes: 0 no problem, 1 problems found (each printed on its own line)
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = command(sub, "repository", help="inspect a Triton model repository",
                     epilog="example:\n  lesionseg repository check ~/.cache/lesionseg/model_repository\n")
    actions = subcommands(parser, dest="action", metavar="ACTION")
    check = command(actions, "check", help="parse every config.pbtxt and check names, ensembles and files", epilog=HELP)
    check.add_argument("directory", type=Path, metavar="DIR", help="the model repository")
    check.set_defaults(run=run_check)


def run_check(args: argparse.Namespace) -> int:
    from lesionseg.server.repository.check import check_repository, load_configs

    problems = check_repository(args.directory)
    if problems:
        for problem in problems:
            print(problem)
        raise RepositoryError(f"{args.directory}: {len(problems)} problem(s) found")
    count = len(load_configs(args.directory)[0])
    print(f"{args.directory}: {count} model(s), no problems found")
    return EXIT_OK
