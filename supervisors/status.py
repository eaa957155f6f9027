"""The status endpoint: a small ASGI app served by hypercorn's trio worker on 127.0.0.1.

- ``GET /status``: the supervision tree's snapshot (every actor's state, restarts, last
  exit, mailbox depth, and what each actor says about itself), as JSON;
- ``GET /events?strategy=NAME&kind=KIND&limit=N``: the newest activity-feed entries;
- ``POST /strategies/NAME/resume``: resume a strategy the reconciler paused. Needs
  ``Authorization: Bearer <token>`` matching the ``LIMITLINE_OPERATOR_TOKEN`` environment
  variable; without that variable set, resuming over HTTP is disabled.

Apart from resume, it only reads: the tree's in-memory snapshot and the store through
read-only connections.
"""

from __future__ import annotations

import errno
import hmac
import os
import socket
import time
from typing import Any, Awaitable, Callable, Protocol
from urllib.parse import parse_qs

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from actors.messages import Resume, strategy_address
from actors.runtime import ActorEnv
from store.access import SqliteReader
from store.codec import dumps
from store.db import latest_events
from supervisors.tree import ChildContext

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
SendASGI = Callable[[dict[str, Any]], Awaitable[None]]
MAX_EVENTS = 1000


class Snapshotter(Protocol):
    def snapshot(self) -> dict[str, Any]: ...


def make_status_app(root: Snapshotter, env: ActorEnv, store: SqliteReader, facts: dict[str, Any]) -> Callable[..., Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: SendASGI) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if scope["method"] == "POST" and path.startswith("/strategies/") and path.endswith("/resume"):
            return await _resume(path.removeprefix("/strategies/").removesuffix("/resume"), scope, env, send)
        if scope["method"] != "GET":
            return await _respond(send, 405, {"error": "only GET is served here (and POST /strategies/NAME/resume)"})
        if path == "/status":
            return await _respond(send, 200, {**facts, "at": time.time(), "tree": root.snapshot()})
        if path == "/events":
            query = parse_qs(scope.get("query_string", b"").decode())
            limit_text = query.get("limit", ["100"])[0]
            if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_EVENTS:
                return await _respond(send, 400, {"error": f"limit: must be a whole number from 1 to {MAX_EVENTS}, got {limit_text!r}"})
            events = await store.read(
                latest_events,
                strategy=query.get("strategy", [None])[0],
                kind=query.get("kind", [None])[0],
                limit=int(limit_text),
            )
            return await _respond(send, 200, {"events": events})
        return await _respond(send, 404, {"error": f"no such endpoint {path}; try /status or /events"})

    return app


TOKEN_ENV = "LIMITLINE_OPERATOR_TOKEN"


async def _resume(name: str, scope: Scope, env: ActorEnv, send: SendASGI) -> None:
    token = os.environ.get(TOKEN_ENV)
    if not token:
        return await _respond(send, 403, {"error": f"resume over HTTP is disabled: set {TOKEN_ENV} to enable it"})
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    given = headers.get("authorization", "")
    if not given.startswith("Bearer ") or not hmac.compare_digest(given.removeprefix("Bearer ").encode(), token.encode()):
        return await _respond(send, 401, {"error": "a valid 'Authorization: Bearer <token>' is required"})
    address = strategy_address(name)
    if address not in env.directory:
        return await _respond(send, 404, {"error": f"no strategy is named {name!r}"})
    await env.directory[address].send(Resume(name, "operator over HTTP"))
    return await _respond(send, 202, {"resumed": name})


async def _respond(send: SendASGI, status: int, body: dict[str, Any]) -> None:
    payload = dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


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
    root: Snapshotter,
    env: ActorEnv,
    store: SqliteReader,
    listener: StatusListener,
    facts: dict[str, Any],
    *,
    task_status: trio.TaskStatus[None],
) -> None:
    config = HypercornConfig()
    config.bind = [listener.bind_spec()]
    config.accesslog = None
    config.errorlog = None
    app = make_status_app(root, env, store, facts)

    async def serving(*, task_status: trio.TaskStatus[list[str]]) -> None:
        await serve(app, config, shutdown_trigger=trio.sleep_forever, task_status=task_status)  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serving)
        ctx.status["url"] = binds[0] if binds else None
        task_status.started()
