"""The PACS gateway: receive → spool → group by series (stable age) → route → segment on Triton →
DICOM SEG + SR → send to every destination, with the journal carrying every step across restarts.

Threads: the DICOM listener (pynetdicom, one thread per association), a scheduler (calls quiet
series complete and routes them), `workers` segmentation workers (requests in flight on Triton,
which batches their tiles) and one sender. Each loop is a short poll of the journal, so a restart
finds every job where the last process left it:
- instance files in the spool the journal does not list (a crash between rename and commit) are
  recorded again; series still receiving wait out their stable age again;
- `running` jobs are queued again; `sending` jobs send what is not yet sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import threading
import time
from pathlib import Path

from lesionseg.gateway import journal as states
from lesionseg.gateway.config import Action, GatewayConfig, Route
from lesionseg.gateway.journal import Journal
from lesionseg.gateway.metrics import GatewayMetrics
from lesionseg.gateway.receiver import Receiver
from lesionseg.gateway.routing import route_for
from lesionseg.gateway.senders import DeliveryError, send
from lesionseg.gateway.spool import Spool
from lesionseg.core.errors import LesionsegError, ModelNotFoundError, ServerUnavailableError

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.25


class Gateway:
    """One gateway process (see the module docstring); `start()`, then `stop()`."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.spool = Spool(config.spool)
        self.journal = Journal(config.journal)
        self.metrics = GatewayMetrics(self)
        self._noted: set[tuple[str, str]] = set()  # (route, SCT 6 task name) whose one-line note was logged
        self.receiver = Receiver(config, self.spool, self.journal, on_instance=self.metrics.instance,
                                 on_reject=lambda why: self.metrics.rejected.inc())
        self._stop = threading.Event()
        # each loop sleeps on its event between polls; the stage before it wakes it up at once
        self._wake = {"scheduler": threading.Event(), "worker": threading.Event(), "sender": threading.Event()}
        self._pool = None  # the Triton servers at `url`: lesionseg.client.servers.ServerPool
        self._pool_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stack = contextlib.ExitStack()
        self.url = config.url

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.warm_up()
        self.recover()
        if self.config.embedded_server:
            self._start_embedded()
        self.servers  # noqa: B018 - the pool starts watching the servers now
        self.receiver.start()
        loops = [("scheduler", "scheduler", self._schedule), ("sender", "sender", self._send)]
        loops += [(f"worker-{i + 1}", "worker", self._work) for i in range(self.config.workers)]
        for name, kind, loop in loops:
            thread = threading.Thread(target=self._loop, args=(name, kind, loop), name=f"gateway-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        if self.config.metrics_port:
            self.metrics.serve(self.config.metrics_port, self.config.host)

    def stop(self) -> None:
        self._stop.set()
        for event in self._wake.values():
            event.set()
        self.receiver.stop()
        for thread in self._threads:
            thread.join(timeout=60)
        self.metrics.close()
        if self._pool is not None:
            self._pool.close()
        self._stack.close()
        self.journal.close()

    def request_stop(self) -> None:
        """Ask `wait` to return (from a signal handler); `stop` then shuts everything down."""
        self._stop.set()

    def wait(self) -> None:
        while not self._stop.wait(1.0):
            pass

    @staticmethod
    def warm_up() -> None:
        """Do once, before the first association, what the first series would otherwise pay for:
        import pydicom's pixel handlers, highdicom and the jobs' client code, and build a SEG and
        an SR of a small series made here, which loads highdicom's tables of the standard."""
        import tempfile

        import numpy as np

        from lesionseg.client import legacy, task  # noqa: F401
        from lesionseg.client.dicom import results
        from lesionseg.client.dicom.series import read_series
        from lesionseg.client.lesion_stats import lesion_stats

        with tempfile.TemporaryDirectory(prefix="lesionseg-gateway-warm-up-") as folder:
            series = read_series(_warm_up_series(Path(folder)))
            mask = (series.data > series.data.mean()).astype(np.uint8)
            algorithm = results.Algorithm(name="warm-up", version="0")
            seg = results.segmentation(series, {results.LESION: mask}, algorithm)
            results.report(series, seg, lesion_stats(mask, series.spacing), algorithm)

    def _start_embedded(self) -> None:
        from lesionseg.client.servers import embedded_settings, start_embedded

        self.url = self._stack.enter_context(start_embedded(embedded_settings(self.config.repository or None)))
        logger.info("embedded Triton at %s", self.url)

    def recover(self) -> None:
        """Record spool files the journal lost (a crash between rename and commit) and queue again
        the jobs a killed process left running."""
        import pydicom

        for path in self.spool.orphans(self.journal.known_paths()):
            try:
                data = path.read_bytes()
                ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
                self.journal.add_instance(sop_uid=str(ds.SOPInstanceUID), series_uid=str(ds.SeriesInstanceUID),
                                          study_uid=str(ds.get("StudyInstanceUID", "")), patient_id=str(ds.get("PatientID", "")),
                                          description=str(ds.get("SeriesDescription", "")), calling_ae="(recovered)",
                                          path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest())
                logger.info("recovered %s from the spool", path)
            except Exception as exc:  # noqa: BLE001 - a damaged orphan is reported, not fatal
                logger.error("%s: spool file the journal does not know, unreadable (%s)", path, exc)
        requeued = self.journal.requeue_interrupted()
        if requeued:
            logger.info("%d interrupted jobs queued again", requeued)

    def _loop(self, name: str, kind: str, step) -> None:
        wake = self._wake[kind]
        while not self._stop.is_set():
            try:
                busy = step()
            except Exception:  # noqa: BLE001 - a loop must survive anything one job throws
                logger.exception("gateway %s", name)
                busy = False
            if not busy:
                wake.wait(POLL_SECONDS)
                wake.clear()

    def backoff(self, attempts: int) -> float:
        return min(self.config.retry_max, self.config.retry_first * 2 ** max(attempts - 1, 0))

    # --- scheduler: complete series → route --------------------------------------------------------

    def _schedule(self) -> bool:
        import pydicom

        jobs = self.journal.stable(time.time() - self.config.stable_age)
        for job in jobs:
            files = self.journal.instance_files(job.uid)
            self.metrics.series_complete(job)
            try:
                first = pydicom.dcmread(str(files[0]), stop_before_pixels=True)
            except Exception as exc:  # noqa: BLE001
                self._fail(job.uid, f"cannot read {files[0].name} ({exc})", stage="route", expect=states.RECEIVED)
                continue
            route = route_for(self.config.routes, first)
            if route is None:
                reason = (f"no route matches (Modality {first.get('Modality', '')}, SeriesDescription "
                          f"{str(first.get('SeriesDescription', ''))!r})")
                self.journal.set_state(job.uid, states.IGNORED, reason=reason, expect=states.RECEIVED)
                logger.info("series %s: %s", job.uid, reason)
            elif route.action == Action.IGNORE:
                self.journal.set_state(job.uid, states.IGNORED, route=route.name, reason=f"route {route.name!r} ignores it",
                                       expect=states.RECEIVED)
            else:
                self.journal.set_state(job.uid, states.QUEUED, route=route.name, expect=states.RECEIVED)
                logger.info("series %s (%d instances) complete: route %r", job.uid, job.instances, route.name)
                self._wake["worker"].set()
        return bool(jobs)

    # --- worker: segment --------------------------------------------------------------------------

    def _fail(self, uid: str, reason: str, *, stage: str, expect: str | None = None) -> None:
        logger.error("series %s failed: %s", uid, reason)
        self.metrics.failures.labels(stage=stage).inc()
        self.journal.set_state(uid, states.FAILED, reason=reason, expect=expect)

    def _work(self) -> bool:
        job = self.journal.next_queued()
        if job is None:
            return False
        route = next((r for r in self.config.routes if r.name == job.route), None)
        if route is None:
            self._fail(job.uid, f"route {job.route!r} is no longer in the config", stage="segment")
            return True
        started = time.time()
        try:
            objects = self.segment(job.uid, route)
        except (ServerUnavailableError, ModelNotFoundError) as exc:
            wait = self.backoff(job.attempts)
            logger.warning("series %s waits %.0f s: %s", job.uid, wait, exc)
            self.journal.set_state(job.uid, states.QUEUED, reason=f"waiting: {exc}", not_before=time.time() + wait)
            return True
        except LesionsegError as exc:
            self._fail(job.uid, str(exc), stage="segment")
            return True
        except Exception as exc:  # noqa: BLE001 - one bad series must not stop the gateway
            logger.debug("series %s", job.uid, exc_info=True)
            self._fail(job.uid, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", stage="segment")
            return True
        self.metrics.stage.labels(stage="segment").observe(time.time() - started)
        destinations = [d.name for d in self.config.destinations]
        self.journal.add_deliveries(job.uid, destinations, objects)
        if destinations:
            self.journal.set_state(job.uid, states.SENDING, expect=states.RUNNING)
            self._wake["sender"].set()
        else:
            self.journal.set_state(job.uid, states.SENT, reason="no destinations configured", expect=states.RUNNING)
        return True

    def segment(self, series_uid: str, route: Route) -> dict[str, Path]:
        """Segment one spooled series by `route`: its `Image` from the instances, the route's job,
        the DICOM results written into the series' results folder (`series_<model>_{seg,sr}.dcm`);
        returns them by SOP Instance UID.

        Raises:
            InputError (bad series), ServerUnavailableError, ModelNotFoundError, InferenceError.
        """
        from lesionseg.client.dicom.series import read_series, series_image
        from lesionseg.client.writer import OutputFormat, Writer

        files = self.journal.instance_files(series_uid)
        image = series_image(read_series(files, label=str(self.spool.instance_path(series_uid, "x").parent)))
        job = self.job(route)
        writer = Writer(output_format=OutputFormat.DICOM, dicom_qc=self.config.qc_capture)
        outputs = writer.outputs(job, image.path, self.spool.results_folder(series_uid), stem_="series")
        return writer.write(job.segment(image), outputs).instances

    def job(self, route: Route):
        """The job of `route` on the gateway's servers (the models' configurations are fetched once
        per server and kept).

        A route's task names may be SCT 6's (seg_ms_lesion, seg_sc_contrast_agnostic): they run SCT
        7's task unless a model is served under the old name itself (`served_task`, as the CLI).

        Raises:
            ModelNotFoundError, ServerUnavailableError: the route's models are not served now.
        """
        from lesionseg.client.task import served_task

        def served(name: str) -> str | None:
            if not name:
                return None
            chosen, note = served_task(self.servers, name)
            if note and (route.name, name) not in self._noted:
                self._noted.add((route.name, name))
                logger.info("route %r: %s", route.name, note)
            return chosen

        if route.contrast:
            from lesionseg.client.legacy import LegacyJob

            return LegacyJob(servers=self.servers, contrast=route.contrast, cord_task=served(route.cord_task))
        from lesionseg.client.task import TaskJob

        return TaskJob(servers=self.servers, task=served(route.task) or route.task, crop_to_cord=route.crop_to_cord,
                       cord_task=served(route.cord_task))

    @property
    def servers(self):
        """The Triton servers at `url` (`lesionseg.client.servers.ServerPool`), made on first use;
        none need answer yet: series wait for them."""
        from lesionseg.client.servers import ServerPool

        with self._pool_lock:
            if self._pool is None:
                self._pool = ServerPool(self.url, wait=True)
            return self._pool

    # --- sender -----------------------------------------------------------------------------------

    def _send(self) -> bool:
        """One round: every pending delivery, one association (or request) per destination."""
        pending = self.journal.pending_deliveries()
        if not pending:
            return False
        by_destination: dict[str, list] = {}
        for row in pending:
            by_destination.setdefault(row["destination"], []).append(row)
        for name, rows in by_destination.items():
            destination = next((d for d in self.config.destinations if d.name == name), None)
            if destination is None:
                for row in rows:
                    self.journal.delivery_failed(row["series_uid"], name, row["sop_uid"], "destination no longer configured",
                                                 time.time() + self.config.retry_max)
                continue
            started = time.time()
            try:
                outcomes = send(destination, [Path(row["path"]) for row in rows], calling_ae=self.config.ae_title)
            except (DeliveryError, OSError) as exc:
                outcomes = [str(exc)] * len(rows)
            for row, failure in zip(rows, outcomes):
                if failure is None:
                    self.journal.delivered(row["series_uid"], name, row["sop_uid"])
                    continue
                wait = self.backoff(row["attempts"] + 1)
                logger.warning("series %s: sending %s to %s failed, retry in %.0f s: %s", row["series_uid"], Path(row["path"]).name,
                               name, wait, failure)
                self.metrics.failures.labels(stage="send").inc()
                self.journal.delivery_failed(row["series_uid"], name, row["sop_uid"], failure, time.time() + wait)
            self.metrics.stage.labels(stage="send").observe(time.time() - started)
        for uid in {row["series_uid"] for row in pending}:
            job = self.journal.job(uid)
            if job is not None and job.state == states.SENT and job.finished is not None:
                self.metrics.stage.labels(stage="total").observe(job.finished - job.first_received)
                logger.info("series %s sent to %s", uid, ", ".join(d.name for d in self.config.destinations))
        return True


def _warm_up_series(folder: Path) -> Path:
    """Three 16 x 16 axial MR slices (1 mm) with what a SEG and an SR need of their source, in `folder`."""
    import numpy as np
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for k in range(3):
        ds = pydicom.Dataset()
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientID, ds.PatientName, ds.StudyDate, ds.StudyTime = "MR", "WARM-UP", "Warm^Up", "20260101", "120000"
        ds.SeriesNumber, ds.InstanceNumber, ds.StudyID, ds.AccessionNumber = 1, k + 1, "1", ""
        ds.ReferringPhysicianName, ds.PatientBirthDate, ds.PatientSex, ds.Manufacturer = "", "", "O", "lesionseg"
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, k], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [1, 1], 1
        ds.Rows = ds.Columns = 16
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = (np.arange(256, dtype=np.uint16).reshape(16, 16) + 256 * k).tobytes()
        ds.save_as(str(folder / f"{k}.dcm"), enforce_file_format=True)
    return folder
