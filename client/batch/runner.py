"""Running a cohort: many subjects, N requests in flight against one server, per-subject outcomes.

Each subject is one input image and the output files it must end with. A subject's failure is
recorded and the others go on. When the server goes away mid-batch (a restart, a rolling update)
the affected subjects wait for it to be ready again and are retried, for up to `retry_seconds`.
With `resume`, subjects whose outputs exist and are readable are skipped. Outputs are written
by the per-subject work (atomically: temporary file + rename), so an interrupted run leaves
complete files or none.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

from lesionseg.client.batch.inputs import Subject
from lesionseg.client.result import Job, Outputs
from lesionseg.client.servers import ServerPool
from lesionseg.client.writer import Writer
from lesionseg.core.errors import EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE, LesionsegError, ServerUnavailableError, UsageError
from lesionseg.core.settings import setting

logger = logging.getLogger(__name__)

OK, SKIPPED, FAILED = "ok", "skipped", "failed"


@dataclasses.dataclass(frozen=True, kw_only=True)
class BatchOptions:
    """`in_flight`: subjects segmented at once (-j/--jobs); `retry_seconds`: how long a subject waits
    for an unavailable server before it fails. Precedence: argument > LESIONSEG_JOBS /
    LESIONSEG_RETRY_SECONDS > default."""

    in_flight: int = 2
    resume: bool = False
    overwrite: bool = False
    retry_seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.in_flight < 1:
            raise UsageError(f"--jobs {self.in_flight} must be at least 1")
        if self.retry_seconds < 0:
            raise UsageError(f"--retry-seconds {self.retry_seconds} must not be negative")
        if self.resume and self.overwrite:
            raise UsageError("--resume keeps valid outputs and --overwrite replaces them; give one")

    @classmethod
    def resolve(cls, *, in_flight: int | None = None, resume: bool = False, overwrite: bool = False,
                retry_seconds: float | None = None) -> "BatchOptions":
        return cls(in_flight=setting("JOBS", in_flight, 2, int), resume=resume, overwrite=overwrite,
                   retry_seconds=setting("RETRY_SECONDS", retry_seconds, 300.0, float))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Planned:
    """One subject and the files its work must end with (`Outputs`, named before any work)."""

    subject: Subject
    outputs: Outputs

    @property
    def files(self) -> tuple[Path, ...]:
        return self.outputs.files


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outcome:
    """What happened to one subject; `note` is the work's one-line result (e.g. lesion count)."""

    item: Planned
    status: str
    seconds: float = 0.0
    attempts: int = 0
    note: str = ""
    unavailable: bool = False
    server: str = ""  # the server that segmented it, when -url names several


def outputs_valid(planned: Planned) -> str | None:
    """None when every output of `planned` exists, is newer than the input, and its NIfTI files read
    completely (those on the input's grid with the input's shape); else the reason they do not."""
    from lesionseg.core.nibabel_import import nibabel as nib
    import numpy as np

    try:
        newest_input = planned.subject.path.stat().st_mtime
    except OSError:
        return "input missing"
    for path in planned.files:
        if not path.is_file() or path.stat().st_size == 0:
            return f"{path.name} missing"
        if path.stat().st_mtime < newest_input:
            return f"{path.name} is older than its input"
    try:
        shape = nib.load(str(planned.subject.path)).shape[:3]
        for path in planned.files:
            if path.name.endswith((".nii", ".nii.gz")):
                image = nib.load(str(path))
                np.asanyarray(image.dataobj)  # reads (and decompresses) everything
                if path in planned.outputs.grid_files and image.shape[:3] != shape:
                    return f"{path.name} has shape {image.shape[:3]}, input {shape}"
    except Exception as exc:  # noqa: BLE001 - any unreadable file means "run again"
        return f"unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    return None


def check_outputs(planned: Sequence[Planned], options: BatchOptions) -> None:
    """Refuse, before any work, outputs shared by two subjects and (without --overwrite or --resume)
    outputs that exist already.

    Raises:
        UsageError: the message names the first clash or existing file and how many there are.
    """
    inputs = {item.subject.path.resolve() for item in planned}
    owners: dict[Path, Path] = {}
    for item in planned:
        for path in item.files:
            if path.resolve() in inputs:
                raise UsageError(f"{item.subject.path} would write {path}, which is an input of this batch: inputs are never "
                                 "overwritten; use -ofolder")
            other = owners.setdefault(path.resolve(), item.subject.path)
            if other != item.subject.path:
                raise UsageError(f"{item.subject.path} and {other} would both write {path}; use -ofolder with a BIDS "
                                 "dataset or folder (the layout is mirrored) or rename one")
    if options.overwrite or options.resume:
        return
    existing = [p for item in planned for p in item.files if p.exists()]
    if existing:
        raise UsageError(f"{existing[0]}: output exists ({len(existing)} existing output files); "
                         "use --resume to skip finished subjects or --overwrite to replace them")


Work = Callable[[Planned], "str | tuple[str, str]"]


def run_subjects(items: Sequence[Planned], work: Work, *, options: BatchOptions,
              wait_ready: Callable[[float], bool] = lambda timeout: False,
              on_done: Callable[[Outcome], None] = lambda outcome: None) -> list[Outcome]:
    """Run `work` on every planned subject, `options.in_flight` at a time; outcomes in the subjects' order.

    `work(subject)` writes the subject's outputs and returns a one-line note (and the server's
    address, when it is worth naming); a `LesionsegError`
    fails that subject only. On `ServerUnavailableError` the subject waits (`wait_ready(seconds)`
    returns True when the server is back) and is retried until `options.retry_seconds` pass.
    """
    outcomes: list[Outcome | None] = [None] * len(items)
    pending: list[int] = []
    for i, item in enumerate(items):
        if options.resume:
            reason = outputs_valid(item)
            if reason is None:
                outcomes[i] = Outcome(item=item, status=SKIPPED, note="outputs exist")
                on_done(outcomes[i])
                continue
            if any(p.exists() for p in item.files):
                logger.info("%s: running again (%s)", item.subject.path, reason)
        pending.append(i)
    lock = threading.Lock()

    def one(i: int) -> Outcome:
        outcome = _attempt(items[i], work, options, wait_ready)
        with lock:
            on_done(outcome)
        return outcome

    with concurrent.futures.ThreadPoolExecutor(max_workers=options.in_flight, thread_name_prefix="lesionseg") as pool:
        futures = {pool.submit(one, i): i for i in pending}
        try:
            for future in concurrent.futures.as_completed(futures):
                outcomes[futures[future]] = future.result()
        except BaseException:  # KeyboardInterrupt: drop what has not started, let running ones finish
            for future in futures:
                future.cancel()
            raise
    return [o for o in outcomes if o is not None]


@dataclasses.dataclass(frozen=True, kw_only=True)
class CohortResult:
    """Every subject's outcome, and the seconds the batch took after planning."""

    outcomes: list[Outcome]
    seconds: float


def run_cohort(job: Job, writer: Writer, subjects: Sequence[Subject], *, servers: ServerPool, options: BatchOptions,
               ofolder: Path | None = None, on_done: Callable[[Outcome], None] = lambda outcome: None) -> CohortResult:
    """Segment `subjects` with `job` on `servers`, `options.in_flight` in flight, and write each one's
    results with `writer` in `ofolder` (mirroring each subject's folder in its dataset; None: the
    job's default place): every subject planned and its outputs checked before any work.

    Raises:
        UsageError: outputs clash or exist (see `check_outputs`).
    """
    from lesionseg.client.images import load_image

    planned = [Planned(subject=s, outputs=writer.outputs(job, s.path, ofolder / s.relative if ofolder is not None else None))
               for s in subjects]
    check_outputs(planned, options)
    several = len(servers.servers) > 1

    def work(item: Planned) -> tuple[str, str]:
        image = dataclasses.replace(load_image(item.subject.path), dataset=item.subject.dataset)
        writer.check(item.outputs, image, overwrite=True)  # existing outputs were refused or accepted above
        result = job.segment(image)
        writer.write(result, item.outputs)
        return result.note, result.server if several else ""

    start = time.monotonic()
    outcomes = run_subjects(planned, work, options=options, wait_ready=servers.wait_ready, on_done=on_done)
    return CohortResult(outcomes=outcomes, seconds=time.monotonic() - start)


def _attempt(item: Planned, work: Work, options: BatchOptions, wait_ready) -> Outcome:
    start = time.monotonic()
    deadline: float | None = None
    attempts = 0
    while True:
        attempts += 1
        try:
            done = work(item)
            note, server = done if isinstance(done, tuple) else (done, "")
            return Outcome(item=item, status=OK, seconds=time.monotonic() - start, attempts=attempts, note=note,
                           server=server)
        except ServerUnavailableError as exc:
            now = time.monotonic()
            deadline = deadline if deadline is not None else now + options.retry_seconds
            logger.warning("%s: server unavailable (attempt %d); waiting for it", item.subject.path, attempts)
            if now >= deadline or not wait_ready(max(deadline - now, 0.0)):
                return Outcome(item=item, status=FAILED, seconds=time.monotonic() - start, attempts=attempts,
                               note=str(exc), unavailable=True)
        except LesionsegError as exc:
            return Outcome(item=item, status=FAILED, seconds=time.monotonic() - start, attempts=attempts, note=str(exc))
        except Exception as exc:  # noqa: BLE001 - one subject's bug must not stop the cohort
            logger.debug("%s failed", item.subject.path, exc_info=True)
            text = str(exc).splitlines()[0] if str(exc) else ""
            return Outcome(item=item, status=FAILED, seconds=time.monotonic() - start, attempts=attempts,
                           note=f"{item.subject.path}: {type(exc).__name__}: {text}")


def exit_code(outcomes: Sequence[Outcome]) -> int:
    """0 when no subject failed; 3 when the failures are all the server's absence; else 1."""
    failed = [o for o in outcomes if o.status == FAILED]
    if not failed:
        return EXIT_OK
    return EXIT_UNAVAILABLE if all(o.unavailable for o in failed) else EXIT_FAILURE


def summary_table(outcomes: Sequence[Outcome], elapsed: float) -> str:
    """A plain-text table (one row per subject) and a totals line with subjects/minute."""
    servers = any(o.server for o in outcomes)
    rows = [("#", "image", "status", "seconds", "tries", *(("server",) if servers else ()), "result")]
    for n, o in enumerate(outcomes, 1):
        rows.append((str(n), o.item.subject.label, o.status, f"{o.seconds:.1f}", str(o.attempts),
                     *((o.server,) if servers else ()), o.note))
    columns = len(rows[0]) - 1
    widths = [max(len(r[c]) for r in rows) for c in range(columns)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:columns], widths)) + "  " + r[columns] for r in rows]
    counts = {s: sum(o.status == s for o in outcomes) for s in (OK, SKIPPED, FAILED)}
    done = counts[OK]
    rate = f"{done / elapsed * 60:.1f} subjects/min" if elapsed > 0 and done else "nothing segmented"
    lines.append(f"{len(outcomes)} subjects: {counts[OK]} ok, {counts[SKIPPED]} skipped, {counts[FAILED]} failed "
                 f"in {elapsed:.1f} s ({rate})")
    return "\n".join(line.rstrip() for line in lines)


def write_summary_tsv(outcomes: Sequence[Outcome], path: Path) -> Path:
    """The summary as TSV (image, status, seconds, attempts, result, outputs), written atomically."""
    from lesionseg.core.files import atomic_write_text

    lines = ["image\tstatus\tseconds\tattempts\tresult\toutputs\tserver"]
    for o in outcomes:
        outputs = ",".join(str(p) for p in o.item.files) if o.status != FAILED else ""
        note = o.note.replace("\t", " ").replace("\n", " ")
        lines.append(f"{o.item.subject.path}\t{o.status}\t{o.seconds:.2f}\t{o.attempts}\t{note}\t{outputs}\t{o.server}")
    return atomic_write_text(path, "\n".join(lines) + "\n")
