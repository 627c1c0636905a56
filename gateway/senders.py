"""Sending results to a destination: C-STORE to a PACS (pynetdicom SCU, one association for every
object waiting for it: pynetdicom's association set-up costs more than a small C-STORE) or STOW-RS
to a DICOMweb server (dicomweb-client, one request per round).

`send` returns, per file, None (stored) or a one-line reason; a destination that cannot be
reached at all raises `DeliveryError`. The caller retries what failed, with back-off.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lesionseg.gateway.config import Destination, DestinationKind

logger = logging.getLogger(__name__)

#: C-STORE statuses that mean stored: success and the warnings (coercion, elements discarded)
STORED = (0x0000, 0xB000, 0xB006, 0xB007)


class DeliveryError(Exception):
    """A destination took nothing (down, refused the association, HTTP error)."""


def send(destination: Destination, files: list[Path], *, calling_ae: str) -> list[str | None]:
    """Send every file to `destination`; returns, per file, None when stored or why not.

    Raises:
        DeliveryError: the destination is unreachable or refused the association / request.
    """
    if destination.kind == DestinationKind.CSTORE:
        return _cstore(destination, files, calling_ae)
    return _stowrs(destination, files)


def _cstore(destination: Destination, files: list[Path], calling_ae: str) -> list[str | None]:
    import pydicom
    from pynetdicom import AE, evt

    from lesionseg.gateway.sockets import no_delay

    datasets = [pydicom.dcmread(str(path)) for path in files]
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for context in sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}):
        ae.add_requested_context(*context)
    assoc = ae.associate(destination.host, int(destination.port), ae_title=destination.ae_title,
                         evt_handlers=[(evt.EVT_CONN_OPEN, no_delay)])
    where = f"{destination.ae_title}@{destination.host}:{destination.port}"
    if not assoc.is_established:
        raise DeliveryError(f"{where} {'rejected the association' if assoc.is_rejected else 'is unreachable'}")
    outcomes: list[str | None] = []
    try:
        for ds, path in zip(datasets, files):
            if not assoc.is_established:
                outcomes.append(f"{where} closed the association")
                continue
            status = assoc.send_c_store(ds)
            code = int(getattr(status, "Status", -1)) if status else -1
            outcomes.append(None if code in STORED else
                            f"{where} answered C-STORE of {path.name} with {'no status (connection lost)' if code < 0 else hex(code)}")
    finally:
        if assoc.is_established:
            assoc.release()
    return outcomes


def _stowrs(destination: Destination, files: list[Path]) -> list[str | None]:
    import pydicom
    from dicomweb_client.api import DICOMwebClient

    datasets = [pydicom.dcmread(str(path)) for path in files]
    client = DICOMwebClient(url=destination.url)
    try:
        response = client.store_instances(datasets)
    except Exception as exc:  # noqa: BLE001 - requests' connection errors, HTTP errors
        raise DeliveryError(f"STOW-RS to {destination.url} failed ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    failed = {str(item.ReferencedSOPInstanceUID) for item in (response.get("FailedSOPSequence") or [])} if response is not None else set()
    return [f"STOW-RS to {destination.url} refused {path.name}" if str(ds.SOPInstanceUID) in failed else None
            for ds, path in zip(datasets, files)]
