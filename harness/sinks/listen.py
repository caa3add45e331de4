"""Rules shared by the sinks for where they may listen."""

from __future__ import annotations

import errno
import ipaddress
import socket


class SinkError(Exception):
    """A sink could not start; the message says which sink and what to do."""


def loopback_family(sink: str, host: str) -> socket.AddressFamily:
    """The address family of a loopback host; any other host is refused.

    Sinks accept whatever is sent to them without authentication, so they
    must never be reachable from outside the machine.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise ValueError(
            f"{sink}: host must be a loopback address such as 127.0.0.1 or ::1, "
            f"got {host!r}"
        )
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


def bind_error(sink: str, host: str, port: int, error: OSError) -> SinkError:
    if error.errno == errno.EADDRINUSE:
        return SinkError(
            f"{sink}: port {port} on {host} is in use; free it or choose another port"
        )
    return SinkError(
        f"{sink}: cannot listen on {host} port {port} ({error.strerror}); "
        "choose another port, or 0 to pick a free one"
    )


def bind_listener(sink: str, host: str, port: int) -> socket.socket:
    """A listening TCP socket on a loopback host; port 0 picks a free port."""
    family = loopback_family(sink, host)
    listener = socket.socket(family, socket.SOCK_STREAM)
    # Same choice asyncio and socketserver make: a port left in TIME_WAIT by
    # the previous run can be reused, a port someone listens on cannot.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
        listener.listen(128)
    except OSError as error:
        listener.close()
        raise bind_error(sink, host, port, error) from error
    return listener
