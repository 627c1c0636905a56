"""Server addresses: HOST:PORT as the user gives them, and whether one names this machine."""

from __future__ import annotations

import ipaddress
import re
import socket

from lesionseg.core.errors import UsageError
from lesionseg.core.settings import setting

DEFAULT_URL = "127.0.0.1:8001"
_URL = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-_]+):(?P<port>\d{1,5})$")


def resolve_url(url: str | None) -> str:
    """The gRPC address to use: argument > `LESIONSEG_URL` > 127.0.0.1:8001, checked as HOST:PORT."""
    value = setting("URL", url, DEFAULT_URL)
    value = value.removeprefix("grpc://")
    match = _URL.match(value)
    if not match or not 0 < int(match.group("port")) < 65536:
        raise UsageError(f"server address {value!r} is not HOST:PORT (e.g. 127.0.0.1:8001)")
    return value


def is_local_address(address: str) -> bool:
    """Whether HOST:PORT names this machine (loopback, or an address of one of its interfaces)."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host in ("localhost", "0.0.0.0", "::"):
        return True
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    ips = {info[4][0] for info in infos}
    if any(ipaddress.ip_address(ip.split("%")[0]).is_loopback for ip in ips):
        return True
    try:
        local = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        local = set()
    return bool(ips & local)
