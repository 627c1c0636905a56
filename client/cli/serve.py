"""`lesionseg serve`: the bundled Triton server in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import types

from lesionseg.client.cli.parsers import command
from lesionseg.core.errors import EXIT_OK, ServerStartError

HELP = """\
examples:
  lesionseg serve --repository model_repository
  lesionseg serve --host 0.0.0.0 --grpc-port 9001 --http-port 9000 --metrics-port 9002

Settings may also come from LESIONSEG_REPOSITORY, LESIONSEG_HOST, LESIONSEG_GRPC_PORT,
LESIONSEG_HTTP_PORT, LESIONSEG_METRICS_PORT, LESIONSEG_LOG_VERBOSE; arguments win.
exit codes: 0 stopped by Ctrl-C/SIGTERM, 1 could not start or died, 2 usage
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = command(sub, "serve", help="run the embedded Triton server (CPU) in the foreground", epilog=HELP)
    parser.add_argument("--repository", metavar="DIR", help="model repository (default ~/.cache/lesionseg/model_repository)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--grpc-port", type=int, metavar="PORT", help="gRPC port (default 8001)")
    parser.add_argument("--http-port", type=int, metavar="PORT", help="HTTP port (default 8000)")
    parser.add_argument("--metrics-port", type=int, metavar="PORT", help="Prometheus metrics port (default 8002)")
    parser.add_argument("--log-verbose", type=int, metavar="N", help="Triton's log verbosity (default 0)")
    parser.add_argument("--startup-timeout", type=float, metavar="S", help="seconds to wait for all models (default 600)")
    parser.set_defaults(run=run)


class _Stop(Exception):
    """Raised from the SIGINT / SIGTERM handler to leave the wait loop."""


def _on_signal(signum: int, frame: types.FrameType | None) -> None:
    raise _Stop


def run(args: argparse.Namespace) -> int:
    from lesionseg.client.status import server_state
    from lesionseg.server.launch.embedded import EmbeddedServer, ServerSettings, summarize_failure

    settings = ServerSettings.resolve(
        repository=args.repository, host=args.host, grpc_port=args.grpc_port, http_port=args.http_port,
        metrics_port=args.metrics_port, log_verbose=args.log_verbose, startup_timeout=args.startup_timeout,
    )
    server = EmbeddedServer(settings)
    # Our own handlers for both: a job started in the background by a non-interactive shell
    # inherits SIGINT as ignored, and Python then installs no KeyboardInterrupt handler.
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"lesionseg: starting Triton on {settings.repository} ...", file=sys.stderr, flush=True)
        server.start()
        server.wait_ready()
        models = server_state(settings.grpc_url).ready_models
        print(
            f"lesionseg: Triton ready with {len(models)} model(s) [{', '.join(models)}]\n"
            f"  gRPC    {settings.host}:{settings.grpc_port}\n"
            f"  HTTP    {settings.host}:{settings.http_port}\n"
            f"  metrics {settings.host}:{settings.metrics_port}\n"
            f"  log     {server.log_path}\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
        code = server.wait()
        raise ServerStartError(f"Triton server exited unexpectedly with code {code}: {summarize_failure(server.log_text())}")
    except (KeyboardInterrupt, _Stop):
        for sig in previous:  # a second signal while stopping must not interrupt the grace period
            signal.signal(sig, signal.SIG_IGN)
        print("lesionseg: stopping Triton ...", file=sys.stderr, flush=True)
        code = server.stop()
        print(f"lesionseg: Triton stopped (exit code {code})", file=sys.stderr)
        return EXIT_OK
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
