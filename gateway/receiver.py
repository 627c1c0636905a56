"""The gateway's DICOM listener (pynetdicom Storage SCP + Verification).

Associations are accepted only from the configured calling AE titles (and, where given, their
hosts), only when the called AE title is ours and only while the spool has `min_free_mb` free;
others get an A-ASSOCIATE-RJ with the matching reason, and one log line each. A C-STORE is
answered success only after the instance is durable in the spool and recorded in the journal;
a failure to store answers 0xA700 (out of resources: disk full, quota, an I/O error of the spool
or the journal; the sender retries) or 0xC000 (cannot understand), and leaves nothing behind.

Identity: an instance is its full SOP Instance UID as its dataset gives it (not the request's
AffectedSOPInstanceUID, which senders such as dcmtk's storescu cut to 64 characters). An instance
whose SOP Instance, Series Instance or Study Instance UID is not a conformant DICOM UID (over 64
characters, characters other than digits and dots, ...) is refused with 0xC000 and an error
comment, before anything is stored or acknowledged: the SEG and SR we make must reference their
source by its UID, which a conformant object cannot carry, and a substituted UID would detach
the result from its images in the PACS. The sender keeps the instance and shows the failure. A
UID already acknowledged is a re-send when its series and content (SHA-256 of the bytes) are the
same: acknowledged again, nothing changes. With other content it is refused (0xC000) and the
first instance is kept: an acknowledged instance is never replaced by another.

Limits: an instance of more than `max_instance_pixels` pixels (Rows x Columns x frames) is refused
(0xC000); so is a new instance of a series that already has `max_series_instances`, and that
series is failed (its reason in `gateway status`).
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from typing import Callable

from lesionseg.client.dicom.uids import identity_problem
from lesionseg.gateway.config import GatewayConfig
from lesionseg.gateway.journal import FAILED, RECEIVED, Journal
from lesionseg.gateway.sockets import no_delay
from lesionseg.gateway.spool import Spool, SpoolConflict

logger = logging.getLogger(__name__)

# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 9.3.4
REJECT_CALLING_AE = (0x01, 0x01, 0x03)   # rejected-permanent, service-user, calling AE title not recognized
REJECT_CALLED_AE = (0x01, 0x01, 0x07)    # rejected-permanent, service-user, called AE title not recognized
REJECT_NO_REASON = (0x01, 0x01, 0x01)    # rejected-permanent, service-user, no reason given (host not allowed)
REJECT_BUSY = (0x02, 0x03, 0x02)         # rejected-transient, service-provider (presentation), local limit exceeded

OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000


class Receiver:
    """The Storage SCP of one gateway; `on_instance(series_uid)` is called after each stored instance."""

    def __init__(self, config: GatewayConfig, spool: Spool, journal: Journal, *,
                 on_instance: Callable[[str, int], None] = lambda uid, size: None,
                 on_reject: Callable[[str], None] = lambda reason: None) -> None:
        self.config, self.spool, self.journal = config, spool, journal
        self.on_instance, self.on_reject = on_instance, on_reject
        self.server = None

    def start(self) -> None:
        from pynetdicom import AE, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        ae = AE(ae_title=self.config.ae_title)
        ae.maximum_associations = 25
        ae.network_timeout = 60
        ae.acse_timeout = 30
        ae.dimse_timeout = 60
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        handlers = [(evt.EVT_CONN_OPEN, no_delay), (evt.EVT_REQUESTED, self._requested), (evt.EVT_C_STORE, self._store),
                    (evt.EVT_C_ECHO, lambda event: 0x0000)]
        self.server = ae.start_server((self.config.host, int(self.config.port)), block=False, evt_handlers=handlers)
        logger.info("DICOM listener %s on %s:%d", self.config.ae_title, self.config.host, self.config.port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def _reject(self, event, why: str, reason: tuple[int, int, int]) -> None:
        assoc = event.assoc
        logger.warning("association refused: %s", why)
        self.on_reject(why)
        assoc.acse.send_reject(*reason)
        assoc.kill()

    def _requested(self, event) -> None:
        request = event.assoc.requestor
        primitive = request.primitive  # the A-ASSOCIATE-RQ: the requestor's AE titles are not filled in yet
        calling = str(primitive.calling_ae_title).strip() if primitive is not None else ""
        called = str(primitive.called_ae_title).strip() if primitive is not None else ""
        host = str(request.address)
        if calling not in self.config.callers:
            return self._reject(event, f"calling AE title {calling!r} from {host} is not in [callers]", REJECT_CALLING_AE)
        hosts = self.config.callers[calling]
        if hosts and host not in hosts:
            return self._reject(event, f"calling AE title {calling!r} from host {host}, allowed only from {', '.join(hosts)}",
                                REJECT_NO_REASON)
        if called != self.config.ae_title:
            return self._reject(event, f"{calling!r} from {host} called AE title {called!r}, we are {self.config.ae_title!r}",
                                REJECT_CALLED_AE)
        free = self.spool.free_bytes()
        if free < self.config.min_free_mb * 2**20:
            return self._reject(event, f"{calling!r} from {host}: spool {self.spool.root} has {free / 2**20:.0f} MB free, "
                                f"under the {self.config.min_free_mb:.0f} MB watermark", REJECT_BUSY)
        return None

    def _store(self, event):
        calling = str(event.assoc.requestor.ae_title).strip()
        try:
            if self.spool.free_bytes() < self.config.min_free_mb * 2**20:
                logger.error("C-STORE from %s refused: spool under the free-space watermark", calling)
                return OUT_OF_RESOURCES
            ds = event.dataset
            series_uid = str(ds.get("SeriesInstanceUID", "")).rstrip("\x00")
            sop_uid = str(ds.get("SOPInstanceUID", "") or event.request.AffectedSOPInstanceUID or "").rstrip("\x00")
            found = identity_problem({"SOPInstanceUID": sop_uid, "SeriesInstanceUID": series_uid,
                                      "StudyInstanceUID": ds.get("StudyInstanceUID", "")})
            if found is not None:
                name, uid, problem = found
                logger.error("C-STORE from %s refused: %s %r is not a conformant DICOM UID (%s)", calling, name, uid, problem)
                return _failure(CANNOT_UNDERSTAND, f"{name} not conformant: {problem}")
            refused = self._over_limits(calling, ds, series_uid, sop_uid)
            if refused is not None:
                return refused
            data = event.encoded_dataset(include_meta=True)
            digest = hashlib.sha256(data).hexdigest()
            known = self.journal.instance(sop_uid)
            if known is not None and (known[0] != series_uid or known[1] not in ("", digest)):
                return self._conflict(calling, sop_uid)
            if known is not None and known[1] == digest:
                logger.debug("C-STORE from %s: %s received again, identical (a re-send)", calling, sop_uid)
                return 0x0000
            # new, or recorded by a journal without digests: the spool compares the bytes
            path, created = self.spool.store(series_uid, sop_uid, data)
            try:
                added = self.journal.add_instance(sop_uid=sop_uid, series_uid=series_uid, study_uid=str(ds.get("StudyInstanceUID", "")),
                                                  patient_id=str(ds.get("PatientID", "")), description=str(ds.get("SeriesDescription", "")),
                                                  calling_ae=calling, path=path, size=len(data), sha256=digest, now=time.time())
            except BaseException:
                if created:  # not acknowledged: nothing of it may stay (it would be segmented)
                    path.unlink(missing_ok=True)
                raise
            if not added and created:  # another association recorded this UID meanwhile, in another series
                path.unlink(missing_ok=True)
                return self._conflict(calling, sop_uid)
        except SpoolConflict:
            return self._conflict(calling, sop_uid)
        except (OSError, sqlite3.OperationalError) as exc:  # disk full, quota, I/O: the sender retries later
            logger.error("C-STORE from %s failed: cannot write the spool (%s): out of resources", calling, exc)
            return OUT_OF_RESOURCES
        except Exception as exc:  # noqa: BLE001 - an undecodable dataset must not kill the association thread
            logger.error("C-STORE from %s refused: %s", calling, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return CANNOT_UNDERSTAND
        self.on_instance(series_uid, len(data))
        return 0x0000

    def _over_limits(self, calling: str, ds, series_uid: str, sop_uid: str):
        """A failure status for an instance over the configured limits, else None: its pixels
        (Rows x Columns x frames over max_instance_pixels), or a new instance of a series that has
        max_series_instances already (the series is failed, visible in `gateway status`; what was
        acknowledged stays in the spool)."""
        pixels = int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0) * int(ds.get("NumberOfFrames", 1) or 1)
        if pixels > self.config.max_instance_pixels:
            logger.error("C-STORE from %s refused: %s has %d x %d x %s pixels, over max_instance_pixels = %d", calling, sop_uid,
                         int(ds.get("Rows", 0)), int(ds.get("Columns", 0)), ds.get("NumberOfFrames", 1), self.config.max_instance_pixels)
            return _failure(CANNOT_UNDERSTAND, "image over the gateway's max_instance_pixels")
        count = self.journal.series_instances(series_uid)
        if count >= self.config.max_series_instances and self.journal.instance(sop_uid) is None:
            reason = f"more than max_series_instances = {self.config.max_series_instances} instances: refused from there on"
            if self.journal.set_state(series_uid, FAILED, reason=reason, expect=RECEIVED):
                logger.error("series %s from %s failed: %s", series_uid, calling, reason)
            logger.error("C-STORE from %s refused: %s would be instance %d of series %s, over max_series_instances = %d",
                         calling, sop_uid, count + 1, series_uid, self.config.max_series_instances)
            return _failure(CANNOT_UNDERSTAND, "series over the gateway's max_series_instances")
        return None

    @staticmethod
    def _conflict(calling: str, sop_uid: str):
        logger.error("C-STORE from %s refused: SOP Instance UID %s already received with other content "
                     "(the first instance is kept)", calling, sop_uid)
        return _failure(CANNOT_UNDERSTAND, "SOP Instance UID already received with other content")


def _failure(status: int, comment: str):
    """A C-STORE failure status with an error comment the sender can show (LO: at most 64 characters)."""
    from pydicom import Dataset

    answer = Dataset()
    answer.Status = status
    answer.ErrorComment = comment[:64]
    return answer


ALL_TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2",        # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",      # Explicit VR Little Endian
    "1.2.840.10008.1.2.1.99",   # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",      # Explicit VR Big Endian
    "1.2.840.10008.1.2.4.50",   # JPEG Baseline
    "1.2.840.10008.1.2.4.51",   # JPEG Extended
    "1.2.840.10008.1.2.4.57",   # JPEG Lossless
    "1.2.840.10008.1.2.4.70",   # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",   # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",   # JPEG-LS Near Lossless
    "1.2.840.10008.1.2.4.90",   # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",   # JPEG 2000
    "1.2.840.10008.1.2.5",      # RLE Lossless
]
