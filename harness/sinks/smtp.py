"""SMTP sink: accepts every email on loopback and records it in a ledger."""

from __future__ import annotations

import email
import email.policy
import socket
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from harness.sinks.ledger import LedgerWriter, parse_pid, utc_now_iso
from harness.sinks.listen import SinkError, bind_listener, loopback_family

SINK = "smtp sink"


class _Recorder:
    """aiosmtpd handler: one ledger row per message, then 250."""

    def __init__(self, ledger: LedgerWriter) -> None:
        self._ledger = ledger

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(
            envelope.original_content or envelope.content, policy=email.policy.default
        )
        self._ledger.append(
            {
                "received_at": utc_now_iso(),
                "message_id": _header(message, "Message-ID"),
                "task": _header(message, "X-Clusterproof-Task"),
                "occurrence": _header(message, "X-Clusterproof-Occurrence"),
                "instance": _header(message, "X-Clusterproof-Instance"),
                "pid": parse_pid(_header(message, "X-Clusterproof-Pid")),
                "to": list(envelope.rcpt_tos),
                "subject": _header(message, "Subject"),
            }
        )
        return "250 OK"


def _header(message: email.message.Message, name: str) -> str | None:
    value = message.get(name)
    return None if value is None else str(value).strip()


class _SocketController(Controller):
    """Controller serving on a socket bound beforehand.

    Binding ourselves gives a clear error for a taken port at once (aiosmtpd
    would only report it after its ready timeout) and lets port 0 pick a free
    port, which the controller cannot do since it connects back to its port.
    """

    def __init__(self, handler: Any, listener: socket.socket) -> None:
        host, port = listener.getsockname()[:2]
        super().__init__(handler, hostname=host, port=port)
        self._listener = listener

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self._listener)


class SmtpSink:
    """Records every email sent to it, one JSON line each in `ledger_path`.

    >>> with SmtpSink(folder / "smtp.jsonl") as sink:
    ...     smtplib.SMTP("127.0.0.1", sink.port).send_message(message)
    """

    def __init__(self, ledger_path: Path, host: str = "127.0.0.1", port: int = 0):
        loopback_family(SINK, host)
        self.ledger_path = Path(ledger_path)
        self.host = host
        self.port = port
        self._ledger = LedgerWriter(self.ledger_path)
        self._controller: _SocketController | None = None

    def start(self) -> None:
        if self._controller is not None:
            raise SinkError(f"{SINK}: already started on port {self.port}")
        listener = bind_listener(SINK, self.host, self.port)
        self.port = listener.getsockname()[1]
        self._ledger.open()
        controller = _SocketController(_Recorder(self._ledger), listener)
        try:
            controller.start()
        except BaseException:
            listener.close()
            self._ledger.close()
            raise
        self._controller = controller

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        self._ledger.close()

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
