"""What `deepseg` and `deepseg-lesion` share on the command line: the connection and batch
arguments, and running a job on one image or on a batch (progress, per-subject errors, the
summary table, the exit code)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lesionseg.core.errors import UsageError

BATCH_HELP = """\
batch mode (several -i values, a folder, a glob pattern in quotes, or a BIDS dataset):
  one server for the whole cohort, --jobs subjects in flight, a failed subject does not stop the
  others, a summary table at the end (exit 1 if any subject failed, 3 if the server stayed away).
  Outputs of a folder or BIDS dataset mirror its layout under -ofolder.
"""


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """-qc, --overwrite, --output-format, the connection (-url, --transport, --compression) and the batch arguments."""
    parser.add_argument("-qc", "--qc", type=Path, metavar="DIR", help="write a QC report entry into DIR (SCT layout, index.html)")
    parser.add_argument("-qc-dataset", "--qc-dataset", metavar="NAME", help="the QC entry's dataset (default: guessed from the input's path)")
    parser.add_argument("-qc-subject", "--qc-subject", metavar="NAME",
                        help="the QC entry's subject (default: guessed from the input's path; one input only)")
    parser.add_argument("-qc-plane", "--qc-plane", type=str.capitalize, choices=("Axial", "Sagittal"), default="Axial",
                        help="the QC view: an axial mosaic around the cord (default) or sagittal panels")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files (default: refuse, exit 2)")
    parser.add_argument("--output-format", choices=("nifti", "dicom", "both"), default="nifti",
                        help="NIfTI masks (default), or for a DICOM series input a DICOM SEG (lesion and cord segments) "
                             "and a TID 1500 SR (lesion count and volumes) instead of them or beside them")
    parser.add_argument("--dicom-qc", action="store_true",
                        help="with DICOM output, also a Secondary Capture of the QC mosaic (for viewers without SEG support)")
    parser.add_argument("-url", "--url", help="Triton gRPC address HOST:PORT (env LESIONSEG_URL; default 127.0.0.1:8001); "
                                              "several, comma-separated, or a name resolving to several addresses: a batch "
                                              "spreads its subjects over them")
    group = parser.add_argument_group("transport")
    group.add_argument("--transport", choices=("auto", "shm", "grpc"),
                       help="volumes via system shared memory (server on this host) or inline gRPC "
                            "(env LESIONSEG_TRANSPORT; default auto: shm when possible)")
    group.add_argument("--compression", choices=("none", "gzip", "deflate"),
                       help="compress gRPC payloads for a remote server (env LESIONSEG_COMPRESSION; default none)")
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
    from lesionseg.client.transport import TransportSettings

    return TransportSettings.resolve(transport=args.transport, compression=args.compression)


def writer(args: argparse.Namespace):
    """The `lesionseg.client.writer.Writer` of --output-format, --dicom-qc and -qc (with its dataset,
    subject and plane)."""
    from lesionseg.client.writer import Writer

    return Writer(output_format=args.output_format, dicom_qc=args.dicom_qc, qc=args.qc, qc_dataset=args.qc_dataset,
                  qc_subject=args.qc_subject, qc_plane=args.qc_plane)


def refuse_batch_only_options(args: argparse.Namespace, *, batch: bool) -> None:
    """Options that name one output or one subject, refused for several inputs."""
    if batch and getattr(args, "output", None) is not None:
        raise UsageError("-o names one output file; with several inputs use -ofolder")
    if batch and args.qc_subject is not None:
        raise UsageError("-qc-subject names one subject; with several inputs each entry takes its subject from its path")


def check_output_folders(args: argparse.Namespace) -> None:
    """Before anything runs (the server is not asked yet): -o is not an input, and the folder of
    -ofolder or of -o can be written into (a batch without -ofolder writes beside each input:
    its writer checks each).

    Raises:
        UsageError: naming the folder and the problem.
    """
    from lesionseg.core.files import check_folders_writable, refuse_inputs

    refuse_inputs([getattr(args, "output", None)], [*args.input, getattr(args, "file_centerline", None)])
    folders = [Path(args.ofolder)] if getattr(args, "ofolder", None) else []
    if getattr(args, "output", None):
        folders.append(Path(args.output).parent)
    check_folders_writable(folders)


def segment_one(args: argparse.Namespace, job, path: Path, *, folder: Path | None, output: Path | None = None) -> list[Path]:
    """Segment one image with `job` and write its results (existing outputs refused unless
    --overwrite, before anything runs); returns the files written."""
    from lesionseg.client.images import load_image

    write = writer(args)
    outputs = write.outputs(job, path, folder, output=output)
    image = load_image(path)
    write.check(outputs, image, overwrite=args.overwrite)
    return write.write(job.segment(image), outputs).files


def segment_cohort(args: argparse.Namespace, job, servers, *, ofolder: Path | None) -> int:
    """Run `job` on every image of `args.input` / `args.bids`; print each failure as it happens and
    the summary table at the end; returns the exit code (0 all done, 1 some failed, 3 no server)."""
    from lesionseg.client.batch.inputs import collect_inputs
    from lesionseg.client.batch.runner import FAILED, BatchOptions, exit_code, run_cohort, summary_table, write_summary_tsv
    from lesionseg.client.cli import progress

    subjects = collect_inputs(args.input, bids=args.bids)
    options = BatchOptions.resolve(in_flight=args.jobs, resume=args.resume, overwrite=args.overwrite, retry_seconds=args.retry_seconds)
    with progress.bar(len(subjects), f"{job.description} ({len(subjects)} images, {options.in_flight} in flight)", quiet=args.quiet) as advance:
        def done(outcome) -> None:
            if outcome.status == FAILED:
                print(f"lesionseg: error: {outcome.note}", file=sys.stderr, flush=True)
            advance(outcome.status == FAILED)

        result = run_cohort(job, writer(args), subjects, servers=servers, options=options, ofolder=ofolder, on_done=done)
    print(summary_table(result.outcomes, result.seconds), flush=True)
    if args.summary is not None:
        write_summary_tsv(result.outcomes, args.summary)
    return exit_code(result.outcomes)
