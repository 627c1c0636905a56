"""TCP options of the gateway's DICOM connections.

DIMSE is request/response: each C-STORE waits for its answer. With Nagle's algorithm on, a small
final segment waits for the peer's delayed ACK (40 ms on Linux), which caps a transfer of small
MR slices at a few instances a second (bench/README.md, "Hospital PACS"). The gateway sets
TCP_NODELAY on every connection it accepts or opens.
"""

from __future__ import annotations

import logging
import socket

logger = logging.getLogger(__name__)


def no_delay(event) -> None:
    """pynetdicom EVT_CONN_OPEN handler: TCP_NODELAY on the association's socket."""
    transport = getattr(event.assoc.dul, "socket", None)
    sock = getattr(transport, "socket", None)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:  # a socket closed under us: nothing to tune
        logger.debug("TCP_NODELAY: %s", exc)
