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

import hmac
import os
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


async def status_actor(
    ctx: ChildContext,
    root: Snapshotter,
    env: ActorEnv,
    store: SqliteReader,
    host: str,
    port: int,
    facts: dict[str, Any],
    *,
    task_status: trio.TaskStatus[None],
) -> None:
    config = HypercornConfig()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    app = make_status_app(root, env, store, facts)

    async def serving(*, task_status: trio.TaskStatus[list[str]]) -> None:
        await serve(app, config, shutdown_trigger=trio.sleep_forever, task_status=task_status)  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serving)
        ctx.status["url"] = binds[0] if binds else None
        task_status.started()
