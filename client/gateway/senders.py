"""Sending results to a destination: C-STORE to a PACS (pynetdicom SCU, one association for all of
a series' objects) or STOW-RS to a DICOMweb server (dicomweb-client). A failure raises
`DeliveryError` with a one-line reason; the caller retries with back-off."""

from __future__ import annotations

import logging
from pathlib import Path

from lesionseg.client.gateway.config import Destination

logger = logging.getLogger(__name__)


class DeliveryError(Exception):
    """A destination did not take an object (down, refused, failure status)."""


def send(destination: Destination, files: list[Path], *, calling_ae: str) -> None:
    """Send every file to `destination`; returns when each got a success status.

    Raises:
        DeliveryError: the first file that was not stored, and why.
    """
    if destination.kind == "cstore":
        _cstore(destination, files, calling_ae)
    else:
        _stowrs(destination, files)


def _cstore(destination: Destination, files: list[Path], calling_ae: str) -> None:
    import pydicom
    from pynetdicom import AE

    datasets = [pydicom.dcmread(str(path)) for path in files]
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate(destination.host, int(destination.port), ae_title=destination.ae_title)
    if not assoc.is_established:
        why = "rejected the association" if assoc.is_rejected else "is unreachable"
        raise DeliveryError(f"{destination.ae_title}@{destination.host}:{destination.port} {why}")
    try:
        for ds, path in zip(datasets, files):
            status = assoc.send_c_store(ds)
            code = int(getattr(status, "Status", -1)) if status else -1
            if code not in (0x0000, 0xB000, 0xB007, 0xB006):
                raise DeliveryError(f"{destination.ae_title} answered C-STORE of {path.name} with status "
                                    f"{'none (connection lost)' if code < 0 else hex(code)}")
    finally:
        if assoc.is_established:
            assoc.release()


def _stowrs(destination: Destination, files: list[Path]) -> None:
    import pydicom
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=destination.url)
    try:
        response = client.store_instances([pydicom.dcmread(str(path)) for path in files])
    except Exception as exc:  # noqa: BLE001 - requests' connection errors, HTTP errors
        raise DeliveryError(f"STOW-RS to {destination.url} failed ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    failed = response.get("FailedSOPSequence") if response is not None else None
    if failed:
        raise DeliveryError(f"STOW-RS to {destination.url}: {len(failed)} instances refused")
