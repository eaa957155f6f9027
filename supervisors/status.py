"""The status server: the listening socket, held for the life of the process, and the
actor that serves the web app (:mod:`supervisors.web.server`) on it with hypercorn's trio
worker. What is served, and who may read or act, is described there and in
:mod:`supervisors.web.access`.
"""

from __future__ import annotations

import errno
import os
import socket

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from supervisors.tree import ChildContext
from supervisors.web.access import exposure_problem
from supervisors.web.server import WebContext, make_web_app


class StatusAddressError(Exception):
    """The status endpoint cannot listen where the config says; the message names the
    field and what to change."""


class StatusListener:
    """The status endpoint's listening socket, bound once before the tree starts and held
    for the life of the process: a port in use or a host that is not this machine's is a
    message at start-up (exit 2), never a status actor that crashes until its supervisor
    gives up; and a restarted status actor serves on the very same socket."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._socket: socket.socket | None = None

    def open(self) -> None:
        where = f"{self.host}:{self.port}"
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except (socket.gaierror, UnicodeError) as error:
            raise StatusAddressError(
                f"status.host: cannot resolve {_short(self.host)} ({getattr(error, 'strerror', None) or error}); "
                "set status.host to an address of this machine, such as 127.0.0.1"
            ) from None
        # IPv4 first where a name has both (``localhost``), as a bind of ``host:port`` would.
        family, kind, proto, _, address = min(infos, key=lambda info: info[0] != socket.AF_INET)
        listener = socket.socket(family, kind, proto)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address)
            listener.listen(128)
        except OSError as error:
            listener.close()
            if error.errno == errno.EADDRINUSE:
                raise StatusAddressError(
                    f"status.port: {where} is already in use by another program; set status.port to a free port, "
                    "or to 0 to let limitline pick one (it prints the address at start)"
                ) from None
            raise StatusAddressError(
                f"status.host: cannot listen on {_short(where)} ({error.strerror or error}); set status.host to an "
                "address of this machine, such as 127.0.0.1"
            ) from None
        problem = exposure_problem(self.host)  # a real address of this machine, beyond loopback
        if problem is not None:
            listener.close()
            raise StatusAddressError(problem)
        self._socket = listener

    def bind_spec(self) -> str:
        """A hypercorn bind for a new server on the held socket (a duplicate of it, which
        that server owns and closes; the held one stays open)."""
        if self._socket is None:
            raise RuntimeError("the status listener is not open")
        return f"fd://{os.dup(self._socket.fileno())}"

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> "StatusListener":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _short(text: str) -> str:
    return text if len(text) <= 80 else text[:79] + "…"


async def status_actor(
    ctx: ChildContext,
    context: WebContext,
    listener: StatusListener,
    *,
    task_status: trio.TaskStatus[None],
) -> None:
    config = HypercornConfig()
    config.bind = [listener.bind_spec()]
    config.accesslog = None  # a request line could carry a token in its query: never logged
    config.errorlog = None
    app = make_web_app(context)

    async def serving(*, task_status: trio.TaskStatus[list[str]]) -> None:
        await serve(app, config, shutdown_trigger=trio.sleep_forever, task_status=task_status)  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serving)
        ctx.status["url"] = binds[0] if binds else None
        task_status.started()
