"""The listening socket, bound before anything else happens.

Both modes bind first, so a taken port or a wrong host is one line before
anything is migrated, written or forked, then listen once the schema is
ready: until then a client is refused at once instead of waiting in the
queue.
"""

from __future__ import annotations

import socket

BACKLOG = 2048


class ListenError(Exception):
    """The server cannot listen where the settings say; one line for people."""


def bind_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port with SO_REUSEADDR, not yet listening.

    Binding fails while another socket listens on the port, so a taken port
    is reported here. Port 0 binds a free port; getsockname() names it.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ListenError(
            f"server.host {host!r} is not an address of this machine "
            f"({exc.strerror}); set --host or CLUSTERPROOF_SERVER__HOST"
        ) from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise _port_error(host, port, exc) from None
    return sock


def start_listening(sock: socket.socket, host: str, port: int) -> None:
    """Listen on a socket from bind_listener; raises ListenError if another
    socket took the port since it was bound."""
    try:
        sock.listen(BACKLOG)
    except OSError as exc:
        raise _port_error(host, port, exc) from None


def _port_error(host: str, port: int, exc: OSError) -> ListenError:
    return ListenError(
        f"cannot listen on {host}:{port} ({exc.strerror}); stop the process "
        "using the port or choose another with --port or CLUSTERPROOF_SERVER__PORT"
    )
