"""`lesionseg status`: is the server live and ready, and what state is each model in."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from lesionseg.client.address import resolve_url
from lesionseg.client.cli.parsers import command
from lesionseg.client.status import server_state
from lesionseg.core.errors import EXIT_FAILURE, EXIT_OK

HELP = """\
examples:
  lesionseg status
  lesionseg status --url triton.example.org:8001 --json
  lesionseg status --models

--models adds each loaded model's precision and, for a reduced one, its parity report's summary
(the full report is <repository>/<model>/parity.json).

exit codes: 0 server ready, 1 live but not ready, 3 unreachable
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = command(sub, "status", help="report a Triton server's health and models", epilog=HELP)
    parser.add_argument("--url", "-url", help="server gRPC address HOST:PORT (env LESIONSEG_URL; default 127.0.0.1:8001)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer (default 5)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--models", action="store_true", help="also each loaded model's precision and parity report summary")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    state = server_state(resolve_url(args.url), timeout=args.timeout, details=args.models)
    if args.json:
        json.dump(dataclasses.asdict(state), sys.stdout, indent=2)
        print()
    else:
        print(f"server {state.url}: live, {'ready' if state.ready else 'NOT ready'} (Triton {state.version})")
        if state.models:
            width = max(len(m.name) for m in state.models)
            print(f"  {'MODEL':<{width}}  VERSION  STATE" + ("  PRECISION  PARITY" if args.models else ""))
            for m in state.models:
                reason = f"  ({m.reason})" if m.reason else ""
                detail = f"  {m.precision or '-':<9}  {m.parity or '-'}" if args.models and m.state == "READY" else ""
                print(f"  {m.name:<{width}}  {m.version:<7}  {m.state:<5}{detail}{reason}")
        else:
            print("  no models")
    return EXIT_OK if state.ready else EXIT_FAILURE
