"""A busy port is reported before a server says where it listens: `newbie serve` and `newbie ui` check it
first, the way their servers will bind (SO_REUSEADDR, so a port in TIME_WAIT is not reported busy)."""

from __future__ import annotations

import errno
import socket

from newbie.errors import NewbieError


def check_port_free(host: str, port: int) -> None:
    """NewbieError naming the port when something already listens on host:port (or the host is not ours)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise NewbieError(f"--host {host}: cannot resolve it ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise NewbieError(
                    f"port {port} on {host} is already in use (another server?); choose another with --port"
                ) from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise NewbieError(f"--host {host} is not an address of this machine") from None
            raise NewbieError(f"cannot listen on {host}:{port} ({e.strerror})") from None
