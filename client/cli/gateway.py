"""`lesionseg gateway`: the hospital PACS gateway (DICOM in, DICOM SEG and SR out); `lesionseg
gateway status`: its jobs."""

from __future__ import annotations

import argparse
import datetime
import signal
import sys
import time
from pathlib import Path

from lesionseg.client.cli.parsers import command
from lesionseg.core.errors import EXIT_OK, UsageError

HELP = """\
examples:
  lesionseg gateway --config gateway.toml                 # listen, segment, send; Ctrl-C stops
  lesionseg gateway --config gateway.toml --port 11113 -url triton:8001
  lesionseg gateway status --config gateway.toml          # jobs: received/queued/running/sent/failed
  storescu +sd +r -aet ORTHANC -aec LESIONSEG 127.0.0.1 11112 dicom/series_7/

Every received instance is in the spool (fsynced) before its C-STORE success; a series counts as
complete after stable_age seconds without a new instance; routes in the config pick its task; the
DICOM SEG and SR go to every destination with retries. A restart resumes every unfinished job.
Settings: argument > LESIONSEG_GATEWAY_<KEY> > the config file > default (keys: see the README).
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = command(sub, "gateway", help="DICOM gateway: receive series from a PACS, segment, send SEG + SR back", epilog=HELP)
    parser.add_argument("action", nargs="?", choices=("run", "status"), default="run", help="run the gateway (default) or list its jobs")
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML or YAML config (env LESIONSEG_GATEWAY_CONFIG)")
    parser.add_argument("--ae-title", metavar="AET", help="our AE title")
    parser.add_argument("--port", type=int, metavar="N", help="DICOM port")
    parser.add_argument("--spool", type=Path, metavar="DIR", help="spool folder (instances, results, journal)")
    parser.add_argument("--stable-age", type=float, metavar="S", help="seconds of quiet after which a series is complete")
    parser.add_argument("--metrics-port", type=int, metavar="N", help="serve Prometheus /metrics on this port")
    parser.add_argument("-url", "--url", help="Triton gRPC address HOST:PORT")
    parser.set_defaults(run=run)


def _config(args: argparse.Namespace):
    import os

    from lesionseg.gateway.config import load_config

    path = args.config or (Path(os.environ["LESIONSEG_GATEWAY_CONFIG"]) if os.environ.get("LESIONSEG_GATEWAY_CONFIG") else None)
    if path is None:
        raise UsageError("give the gateway's config file with --config (or LESIONSEG_GATEWAY_CONFIG)")
    return load_config(path, ae_title=args.ae_title, port=args.port, spool=args.spool, stable_age=args.stable_age,
                       metrics_port=args.metrics_port, url=args.url)


def run(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.action == "status":
        return status(config)
    import logging

    from lesionseg.gateway.service import Gateway

    # pynetdicom logs every association and C-STORE at INFO: only with -vv
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if getattr(args, "verbose", 0) >= 2 else logging.WARNING)
    gateway = Gateway(config)
    stopping = []

    def stop(signum, frame) -> None:
        stopping.append(signum)
        gateway.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        gateway.start()
    except OSError as exc:
        gateway.stop()
        raise UsageError(f"cannot listen on {config.host}:{config.port} ({exc.strerror or exc})") from None
    print(f"lesionseg gateway: {config.ae_title} listening on {config.host}:{config.port}, spool {config.spool}, "
          f"Triton {gateway.url}", file=sys.stderr, flush=True)
    try:
        gateway.wait()
    finally:
        gateway.stop()
    print("lesionseg gateway: stopped", file=sys.stderr, flush=True)
    return EXIT_OK


def status(config) -> int:
    """Print the journal's jobs, oldest first, and the totals by state."""
    from lesionseg.core.text import printable
    from lesionseg.gateway.journal import Journal

    if not config.journal.exists():
        raise UsageError(f"{config.journal}: no journal (the gateway has not run with this spool)")
    journal = Journal(config.journal)
    now = time.time()
    rows = [("series", "description", "state", "route", "instances", "received", "reason")]
    for job in journal.jobs():
        when = datetime.datetime.fromtimestamp(job.first_received).strftime("%Y-%m-%d %H:%M:%S")
        rows.append((printable(job.uid), printable(job.description[:24]), job.state, printable(job.route), str(job.instances),
                     f"{when} ({now - job.first_received:.0f} s ago)", printable(job.reason)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1])
    print(", ".join(f"{state} {count}" for state, count in journal.counts().items()))
    journal.close()
    return EXIT_OK
