"""Webhooks: the notifier's rules as plain calls, then its HTTP against a real local server
(a failing endpoint retried, a dead one given up, a hung one holding up nothing), then the
whole runtime posting its fills, with no secret in any body."""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trio
from helpers import KEY, SECRET, Watch, live_config, new_sandbox, start_app

from actors.messages import RecordEvent
from actors.notifier.core import NotifierCore, RetryPolicy, Route
from actors.notifier.shell import notifier_actor
from actors.runtime import ActorEnv
from exchange.sandbox import serve_sandbox
from supervisors.app import NOTIFIER, App
from supervisors.config import parse_config
from supervisors.tree import ChildSpec, Supervisor


class Changed:
    """Wakes a trio test when something it watches may have changed, whichever thread says so."""

    def __init__(self) -> None:
        self.event = trio.Event()
        self.token: trio.lowlevel.TrioToken | None = None

    def poke(self) -> None:
        self.event.set()
        self.event = trio.Event()

    def poke_from_thread(self) -> None:
        if self.token is not None:
            try:
                trio.from_thread.run_sync(self.poke, trio_token=self.token)
            except trio.RunFinishedError:
                pass

    async def until(self, condition) -> None:
        self.token = trio.lowlevel.current_trio_token()
        while not condition():
            await self.event.wait()


class Hooks:
    """A real HTTP server on 127.0.0.1 recording each POST. ``/fail/N`` answers 500 to its
    first N requests, ``/dead`` always, ``/hang`` holds each request until released."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict]] = []
        self.tries: dict[str, int] = {}
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.changed = Changed()
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                data = self.rfile.read(int(self.headers["content-length"]))
                with hooks.lock:
                    tries = hooks.tries[self.path] = hooks.tries.get(self.path, 0) + 1
                status = 200
                if self.path.startswith("/fail/") and tries <= int(self.path.rsplit("/", 1)[1]):
                    status = 500
                elif self.path == "/dead":
                    status = 500
                elif self.path == "/hang":
                    hooks.release.wait(30)
                if status == 200:
                    with hooks.lock:
                        hooks.received.append((self.path, json.loads(data)))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()
                hooks.changed.poke_from_thread()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def of(self, path: str) -> list[dict]:
        with self.lock:
            return [body for p, body in self.received if p == path]


@pytest.fixture
def hooks():
    server = Hooks()
    yield server
    server.close()


def fill(n: int = 1, strategy: str = "dip") -> RecordEvent:
    return RecordEvent("fill", f"strategy:{strategy}", 1_500_000_000.25, strategy=strategy, client_order_id=f"ll-{n}",
                       rule="change(-1%,1)", payload={"side": "buy", "price": Decimal("2458.12"), "amount": Decimal("0.2")})


# ------------------------------------------------------------------ the core


def test_the_body_is_the_event_as_json_with_exact_decimals_and_utc_times():
    core = NotifierCore({"fill": Route("fill", "http://h/x")})
    delivery = core.offer(fill(), now=0.0)
    assert json.loads(delivery.body) == {
        "webhook": "fill", "kind": "fill", "at": "2017-07-14T02:40:00.250Z", "strategy": "dip", "actor": "strategy:dip",
        "client_order_id": "ll-1", "rule": "change(-1%,1)", "reason": None,
        "payload": {"side": "buy", "price": "2458.12", "amount": "0.2"},
    }
    assert core.offer(RecordEvent("evaluated", "strategy:dip", 0.0), now=0.0) is None  # no webhook for it


def test_retries_double_up_to_the_cap_then_give_up_and_a_full_queue_drops_and_counts():
    core = NotifierCore({"fill": Route("fill", "http://h/x")}, RetryPolicy(max_attempts=4, backoff=1, max_backoff=3, capacity=2))
    first = core.offer(fill(1), now=10.0)
    assert core.offer(fill(2), now=10.0) is not None
    assert core.offer(fill(3), now=10.0) is None and core.dropped == 1
    assert [d.id for d in core.take_due(10.0)] == [first.id, first.id + 1]
    assert core.take_due(10.0) == []  # in flight: never tried twice at once
    core.delivered(first.id + 1)
    assert core.failed(first.id, "HTTP 500", now=10.0) == 11.0  # 1 s
    assert core.take_due(10.5) == [] and core.next_due() == 11.0
    core.take_due(11.0)
    assert core.failed(first.id, "HTTP 500", now=11.0) == 13.0  # 2 s
    core.take_due(13.0)
    assert core.failed(first.id, "ConnectError", now=13.0) == 16.0  # 4 s, capped at 3
    core.take_due(16.0)
    assert core.failed(first.id, "HTTP 500", now=16.0) is None  # its 4th try was its last
    assert core.status() == {"webhooks": ["fill"], "pending": 0, "sent": 1, "retried": 3, "gave_up": 1, "dropped": 1}


def test_a_secret_that_reached_an_event_is_blanked_in_the_body():
    core = NotifierCore({"fill": Route("fill", "http://h/x")}, scrub=lambda text: text.replace(SECRET, "***"))
    event = RecordEvent("fill", "strategy:dip", 0.0, strategy="dip", reason=f"exchange said {SECRET}")
    assert SECRET not in core.offer(event, 0.0).body.decode()


# -------------------------------------------------------- the shell, over HTTP


async def run_notifier(nursery: trio.Nursery, routes: dict[str, Route], policy: RetryPolicy, changed: Changed):
    """The notifier actor under a supervisor, and a function to hand it an event."""
    from actors.mailbox import Mailbox

    class Observed(NotifierCore):
        """Tells the test each outcome (the core itself is unchanged)."""

        def delivered(self, delivery_id: int) -> None:
            super().delivered(delivery_id)
            changed.poke()

        def failed(self, delivery_id: int, error: str, now: float) -> float | None:
            retry = super().failed(delivery_id, error, now)
            changed.poke()
            return retry

    mailbox = Mailbox(16)
    spec = ChildSpec(NOTIFIER, lambda ctx, task_status: notifier_actor(
        ctx, make_core=lambda: Observed(routes, policy), timeout=10, env=ActorEnv({}, None), task_status=task_status),
        mailbox=mailbox)
    supervisor = Supervisor("root", [spec])
    await nursery.start(supervisor.run_root)
    return supervisor, mailbox.send_channel.send_nowait


def status_of(supervisor: Supervisor) -> dict:
    return supervisor.snapshot()["children"][0]["status"]


async def test_a_failing_endpoint_is_retried_a_dead_one_given_up_and_a_hung_one_holds_up_nothing(hooks):
    routes = {
        "fill": Route("fill", f"{hooks.url}/fail/2"),
        "breaker_open": Route("breaker", f"{hooks.url}/dead"),
        "strategy_paused": Route("pause", f"{hooks.url}/hang"),
        "venue_isolated": Route("isolation", f"{hooks.url}/ok"),
    }
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            until = hooks.changed.until
            supervisor, offer = await run_notifier(nursery, routes, RetryPolicy(max_attempts=3, backoff=0.01, max_backoff=0.05),
                                                   hooks.changed)
            offer(RecordEvent("strategy_paused", "strategy:dip", 0.0, strategy="dip", reason="unexplained"))
            offer(fill())
            offer(RecordEvent("breaker_open", "strategy:dip", 0.0, strategy="dip"))
            offer(RecordEvent("venue_isolated", "connection:sim", 0.0, reason="unreachable"))
            # The hung endpoint holds its own notification only: the others go through.
            await until(lambda: hooks.of("/fail/2") and hooks.of("/ok") and status_of(supervisor)["gave_up"] == 1)
            assert hooks.tries["/fail/2"] == 3 and hooks.of("/fail/2")[0]["kind"] == "fill"
            assert hooks.tries["/dead"] == 3  # max_attempts, then given up
            assert hooks.of("/hang") == []
            hooks.release.set()
            await until(lambda: hooks.of("/hang"))
            await until(lambda: status_of(supervisor)["sent"] == 3)
            assert status_of(supervisor) == {"webhooks": ["breaker", "fill", "isolation", "pause"], "pending": 0,
                                             "sent": 3, "retried": 4, "gave_up": 1, "dropped": 0}
            nursery.cancel_scope.cancel()


def test_a_full_notifier_mailbox_drops_and_counts_never_waits(fast_raw, tmp_path):
    fast_raw["notifications"] = {"webhooks": {"fill": "http://127.0.0.1:9/x"}, "queue": 2}
    app = App(parse_config(fast_raw))
    for n in range(5):  # the notifier is not running: nothing drains its mailbox of 2
        app._committed(fill(n))
    assert app.notifications_dropped == 3
    app._committed(RecordEvent("evaluated", "strategy:dip", 0.0))  # no webhook: not offered at all
    assert app.notifications_dropped == 3


async def test_the_runtime_posts_its_fills_with_no_secret_in_any_body(tmp_path, hooks, credentials, monkeypatch):
    monkeypatch.setenv("LL_TEST_HOOK", f"{hooks.url}/fills?token=hook-secret-77")
    sandbox = new_sandbox(speed=50)
    watch = Watch()
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_sandbox, sandbox, 0)
            raw = live_config(tmp_path, url)
            raw["notifications"] = {"webhooks": {"fill": "env:LL_TEST_HOOK", "pause": f"{hooks.url}/pauses"}}
            running = await start_app(nursery, raw, watch)
            await watch.until(lambda _: watch.count("fill") >= 2)
            await hooks.changed.until(lambda: len(hooks.of("/fills?token=hook-secret-77")) >= 2)

            def notifier() -> dict:
                return next(c for c in running.app.snapshot()["children"] if c["name"] == NOTIFIER)["status"]

            await watch.until(lambda _: notifier()["sent"] >= 2)  # re-checked at every event (one per candle)
            assert notifier()["webhooks"] == ["fill", "pause"]
            nursery.cancel_scope.cancel()
    bodies = hooks.of("/fills?token=hook-secret-77")
    fills = {e.client_order_id: e for e in watch.of("fill")}
    for body in bodies:
        assert body["kind"] == "fill" and body["strategy"] == "dipper" and body["client_order_id"] in fills
        assert Decimal(body["payload"]["price"]) == Decimal(str(fills[body["client_order_id"]].payload["price"]))
    text = json.dumps(hooks.received)
    assert KEY not in text and SECRET not in text and "hook-secret-77" not in text.replace("/fills?token=hook-secret-77", "")
