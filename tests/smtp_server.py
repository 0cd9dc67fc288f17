"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, a free port, messages recorded.

It can be told to refuse some recipients (``refuse["a@b"] = "550 5.1.1 no such user"``, a 4xx
code defers instead), to answer DATA with a code, or to be down (``down()`` closes the port, so
connections are refused; ``up()`` listens again on the same port).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import pytest
from aiosmtpd.controller import Controller


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes


@dataclass
class _Handler:
    messages: list[Received] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001
        if self.data_reply:
            return self.data_reply
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SmtpServer:
    def __init__(self, **server_kwargs) -> None:  # noqa: ANN003 - passed to aiosmtpd's SMTP
        self.handler = _Handler()
        self.host, self.port = "127.0.0.1", _free_port()
        self.server_kwargs = server_kwargs
        self._controller: Controller | None = None

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    @property
    def refuse(self) -> dict[str, str]:
        return self.handler.refuse

    def answer_data(self, reply: str | None) -> None:
        self.handler.data_reply = reply

    def up(self) -> None:
        if self._controller is None:
            self._controller = Controller(self.handler, hostname=self.host, port=self.port,
                                          **self.server_kwargs)
            self._controller.start()

    def down(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def config_yaml(self) -> str:
        """The ``email.smtp`` block that points trialwatch at this server."""
        return f"{{host: {self.host}, port: {self.port}, timeout_s: 5}}"


@pytest.fixture
def smtp_server():
    server = SmtpServer()
    server.up()
    try:
        yield server
    finally:
        server.down()
