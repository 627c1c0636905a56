"""Server addresses: HOST:PORT as the user gives them (one, several comma-separated, or a name that
resolves to several), and whether one names this machine."""

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


def split_urls(url: str | None) -> list[str]:
    """The HOST:PORT entries of a `-url` value (argument > LESIONSEG_URL > default), comma-separated.

    Raises:
        UsageError: an entry is not HOST:PORT, or one appears twice.
    """
    text = setting("URL", url, DEFAULT_URL)
    entries = [resolve_url(part.strip()) for part in text.split(",") if part.strip()]
    if not entries:
        raise UsageError("-url names no server")
    if len(set(entries)) != len(entries):
        raise UsageError(f"-url {text!r} names a server twice")
    return entries


def expand(entry: str) -> list[str]:
    """`entry` as one HOST:PORT per address its host name resolves to (an IP address: itself)."""
    host, port = entry.rsplit(":", 1)
    bare = host.strip("[]")
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in bare else socket.AF_INET, bare)
        return [entry]
    except OSError:
        pass
    try:
        infos = socket.getaddrinfo(bare, int(port), type=socket.SOCK_STREAM)
    except OSError:
        return [entry]  # unresolvable now: kept, and found down by the health check
    addresses = sorted({info[4][0] for info in infos})
    if len(addresses) <= 1 or bare == "localhost":
        return [entry]
    return [f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses]
