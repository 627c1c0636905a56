"""Command-line glue shared by `deepseg` and `deepseg-lesion`: transport and batch arguments,
and the cohort run (inputs -> subjects -> one server, N in flight -> summary table, exit code)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

from lesionseg.client.batch.inputs import InputImage, collect_inputs

BATCH_HELP = """\
batch mode (several -i values, a folder, a glob pattern in quotes, or a BIDS dataset):
  one server for the whole cohort, --jobs subjects in flight, a failed subject does not stop the
  others, a summary table at the end (exit 1 if any subject failed, 3 if the server stayed away).
  Outputs of a folder or BIDS dataset mirror its layout under -ofolder.
"""


def add_transport_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("transport")
    group.add_argument("--transport", choices=("auto", "shm", "grpc"),
                       help="volumes via system shared memory (server on this host) or inline gRPC "
                            "(env LESIONSEG_TRANSPORT; default auto: shm when possible)")
    group.add_argument("--compression", choices=("none", "gzip", "deflate"),
                       help="compress gRPC payloads for a remote server (env LESIONSEG_COMPRESSION; default none)")


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("batch")
    group.add_argument("--bids", nargs="*", metavar="ENTITY=VALUE",
                       help="treat folders as BIDS datasets and keep images matching every filter, e.g. "
                            "--bids sub=01,02 suffix=T2w (folders with dataset_description.json are BIDS anyway)")
    group.add_argument("-j", "--jobs", type=int, metavar="N", help="subjects in flight at once (env LESIONSEG_JOBS; default 2)")
    group.add_argument("--resume", action="store_true", help="skip subjects whose outputs exist and are readable")
    group.add_argument("--retry-seconds", type=float, metavar="S",
                       help="how long a subject waits for an unavailable server (env LESIONSEG_RETRY_SECONDS; default 300)")
    group.add_argument("--summary", type=Path, metavar="FILE.tsv", help="also write the summary table as TSV")


def transport_settings(args: argparse.Namespace):
    from lesionseg.client.connection import TransportSettings

    return TransportSettings.resolve(mode=args.transport, compression=args.compression)


def run_cohort(args: argparse.Namespace, *, model: str, plan: Callable, work: Callable, what: str) -> int:
    """Segment every input of `args.input`/`args.bids` with `work(link, subject) -> note`;
    `plan(link, image) -> Subject` names each subject's outputs. Returns the exit code."""
    from lesionseg.client.cli import progress
    from lesionseg.client.batch.runner import FAILED, BatchOptions, check_outputs, exit_code, run_batch, summary_table, write_summary_tsv
    from lesionseg.client.session import server_for_run
    from lesionseg.client.connection import Transport

    images = collect_inputs(args.input, bids=args.bids)
    options = BatchOptions.resolve(jobs=args.jobs, resume=args.resume, overwrite=args.overwrite, retry_seconds=args.retry_seconds)
    with server_for_run(args.url) as address, Transport(address, transport_settings(args)) as link:
        subjects = [plan(link, image) for image in images]
        check_outputs(subjects, options)
        start = time.monotonic()
        with progress.bar(len(subjects), f"{what} ({len(subjects)} images, {options.jobs} in flight)", quiet=args.quiet) as advance:
            def done(outcome) -> None:
                if outcome.status == FAILED:
                    print(f"lesionseg: error: {outcome.note}", file=sys.stderr, flush=True)
                advance(outcome.status == FAILED)

            outcomes = run_batch(subjects, lambda subject: work(link, subject), options=options,
                                 wait_ready=lambda timeout: link.wait_ready(model, timeout), on_done=done)
        elapsed = time.monotonic() - start
    print(summary_table(outcomes, elapsed), flush=True)
    if args.summary is not None:
        write_summary_tsv(outcomes, args.summary)
    return exit_code(outcomes)


def subject_folder(ofolder: Path | None, image: InputImage) -> Path | None:
    """Where a subject's outputs go: `ofolder` mirroring the image's place in its dataset, else None."""
    return None if ofolder is None else ofolder / image.relative
