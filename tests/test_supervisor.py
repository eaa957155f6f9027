"""Each supervision rule, proved under trio's autojump clock."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors.mailbox import Mailbox
from supervisors.tree import (
    ChildContext,
    ChildSpec,
    RestartStrategy,
    RestartType,
    Supervisor,
    SupervisorGaveUp,
)


class Journal:
    """Records what the children did, in order, and lets a test wait for a line."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = trio.Event()

    def add(self, line: str) -> None:
        self.lines.append(line)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Any) -> None:
        while not predicate(self.lines):
            await self._changed.wait()

    def count(self, line: str) -> int:
        return self.lines.count(line)


def worker(journal: Journal, name: str, crash_on: trio.Event | None = None):
    """A child that logs its start and stop, and crashes whenever ``crash_on`` fires."""

    async def start(ctx: ChildContext, *, task_status) -> None:
        journal.add(f"start {name}")
        task_status.started()
        try:
            if crash_on is not None:
                await crash_on.wait()
                raise RuntimeError(f"{name} crashed")
            await trio.sleep_forever()
        finally:
            journal.add(f"stop {name}")

    return start


def crash_trigger():
    """A re-armable crash switch: each pull crashes the current incarnation once."""

    class Trigger:
        def __init__(self) -> None:
            self.event = trio.Event()

        def pull(self) -> None:
            self.event.set()

        def rearm(self) -> None:
            self.event = trio.Event()

    return Trigger()


def crashing_worker(journal: Journal, name: str, trigger: Any):
    async def start(ctx: ChildContext, *, task_status) -> None:
        journal.add(f"start {name}")
        task_status.started()
        try:
            await trigger.event.wait()
            trigger.rearm()
            raise RuntimeError(f"{name} crashed")
        finally:
            journal.add(f"stop {name}")

    return start


async def test_children_start_in_order_and_stop_in_reverse(autojump_clock):
    journal = Journal()
    sup = Supervisor("root", [ChildSpec(n, worker(journal, n)) for n in "abc"])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run_root)
        assert journal.lines == ["start a", "start b", "start c"]
        nursery.cancel_scope.cancel()
    assert journal.lines[3:] == ["stop c", "stop b", "stop a"]
    assert sup.state == "stopped"


async def test_start_is_synchronous_next_child_waits_for_ready(autojump_clock):
    journal = Journal()

    async def slow(ctx, *, task_status):
        await trio.sleep(10)
        journal.add("slow ready")
        task_status.started()
        await trio.sleep_forever()

    sup = Supervisor("root", [ChildSpec("slow", slow), ChildSpec("b", worker(journal, "b"))])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run_root)
        assert journal.lines == ["slow ready", "start b"]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "strategy, restarted",
    [
        (RestartStrategy.ONE_FOR_ONE, ["b"]),
        (RestartStrategy.REST_FOR_ONE, ["b", "c"]),
        (RestartStrategy.ONE_FOR_ALL, ["a", "b", "c"]),
    ],
)
async def test_restart_strategies(autojump_clock, strategy, restarted):
    journal = Journal()
    trigger = crash_trigger()
    specs = [
        ChildSpec("a", worker(journal, "a")),
        ChildSpec("b", crashing_worker(journal, "b", trigger)),
        ChildSpec("c", worker(journal, "c")),
    ]
    sup = Supervisor("root", specs, strategy=strategy)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run_root)
        journal.lines.clear()
        trigger.pull()
        await journal.wait_for(lambda lines: lines.count("start b") == 1)
        await trio.sleep(1)
        starts = [line.split()[1] for line in journal.lines if line.startswith("start")]
        stops = [line.split()[1] for line in journal.lines if line.startswith("stop")]
        assert starts == restarted
        # The crashed child stops first (it is the crash), then the siblings in reverse.
        assert stops == ["b"] + [n for n in reversed(restarted) if n != "b"]
        snapshot = sup.snapshot()
        by_name = {node["name"]: node for node in snapshot["children"]}
        assert by_name["b"]["restarts"] == 1
        assert by_name["b"]["last_exit"]["reason"] == "RuntimeError: b crashed"
        assert all(node["state"] == "running" for node in by_name.values())
        nursery.cancel_scope.cancel()


async def test_transient_restarted_only_after_a_crash_and_temporary_never(autojump_clock):
    journal = Journal()
    finish = trio.Event()

    async def finishes(ctx, *, task_status):
        journal.add("start transient")
        task_status.started()
        await finish.wait()

    trigger = crash_trigger()
    sup = Supervisor(
        "root",
        [
            ChildSpec("transient", finishes, restart=RestartType.TRANSIENT),
            ChildSpec("temporary", crashing_worker(journal, "temporary", trigger), restart=RestartType.TEMPORARY),
            ChildSpec("crashy", crashing_worker(journal, "crashy", trigger), restart=RestartType.TRANSIENT),
        ],
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run_root)
        finish.set()
        trigger.pull()
        await trio.sleep(1)
        states = {node["name"]: node["state"] for node in sup.snapshot()["children"]}
        assert journal.count("start transient") == 1
        assert states["transient"] == "stopped"
        assert journal.count("start temporary") == 1
        assert states["temporary"] == "failed"
        nursery.cancel_scope.cancel()


async def test_intensity_exceeded_gives_up_and_parent_restarts_the_subtree(autojump_clock):
    journal = Journal()
    trigger = crash_trigger()
    child = Supervisor(
        "venue",
        [ChildSpec("conn", crashing_worker(journal, "conn", trigger)), ChildSpec("strat", worker(journal, "strat"))],
        strategy=RestartStrategy.REST_FOR_ONE,
        max_restarts=3,
        period=60,
    )
    events: list[tuple[str, str]] = []
    root = Supervisor("root", [ChildSpec.for_supervisor(child)], max_restarts=5, period=60)

    def emit(kind, actor, reason, payload):
        events.append((kind, actor))

    async with trio.open_nursery() as nursery:
        await nursery.start(root.run_root, emit)
        for _ in range(3):
            trigger.pull()
            await trio.sleep(1)
        assert child.snapshot()["restarts"] == 3
        assert journal.count("start conn") == 4
        trigger.pull()  # the fourth crash within the period
        await trio.sleep(1)
        assert ("supervisor_gave_up", "venue") in events
        assert ("child_restarting", "root/venue") in events
        # The parent started the whole subtree again, with a fresh intensity window.
        assert journal.count("start conn") == 5
        assert journal.count("start strat") == 5
        snap = root.snapshot()
        assert snap["children"][0]["restarts"] == 1
        assert "more than 3 restarts" in snap["children"][0]["last_exit"]["reason"]
        assert child.snapshot()["state"] == "running"
        nursery.cancel_scope.cancel()


async def test_crashes_spread_beyond_the_period_do_not_give_up(autojump_clock):
    journal = Journal()
    trigger = crash_trigger()
    sup = Supervisor("s", [ChildSpec("c", crashing_worker(journal, "c", trigger))], max_restarts=3, period=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run_root)
        for _ in range(6):
            trigger.pull()
            await trio.sleep(4)
        assert sup.state == "running"
        assert journal.count("start c") == 7
        nursery.cancel_scope.cancel()


async def test_root_giving_up_escalates_to_its_caller(autojump_clock):
    journal = Journal()
    trigger = crash_trigger()
    sup = Supervisor("root", [ChildSpec("c", crashing_worker(journal, "c", trigger))], max_restarts=1, period=10)
    async def crash_twice():
        await trio.sleep(1)
        trigger.pull()
        await trio.sleep(1)
        trigger.pull()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(crash_twice)
        with pytest.raises(SupervisorGaveUp, match="more than 1 restarts"):
            await sup.run_root()
    assert sup.state == "gave_up"


async def test_one_venue_giving_up_leaves_another_venue_running(autojump_clock):
    journal = Journal()
    trigger = crash_trigger()
    bad = Supervisor("venue:bad", [ChildSpec("conn-bad", crashing_worker(journal, "conn-bad", trigger))], max_restarts=1, period=60)
    good = Supervisor("venue:good", [ChildSpec("conn-good", worker(journal, "conn-good"))])
    venues = Supervisor(
        "venues", [ChildSpec.for_supervisor(bad), ChildSpec.for_supervisor(good)], max_restarts=10, period=60
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(venues.run_root)
        for _ in range(4):
            trigger.pull()
            await trio.sleep(1)
        assert journal.count("start conn-good") == 1
        assert "stop conn-good" not in journal.lines
        assert journal.count("start conn-bad") == 5
        nursery.cancel_scope.cancel()


async def test_queued_messages_reach_the_next_incarnation(autojump_clock):
    mailbox = Mailbox(capacity=16)
    received: list[tuple[int, str]] = []

    async def consumer(ctx: ChildContext, *, task_status):
        task_status.started()
        async for message in ctx.inbox:
            received.append((ctx.incarnation, message))
            if message == "boom":
                # Crash while more messages are still queued behind this one.
                raise RuntimeError("poison message")

    sup = Supervisor("root", [ChildSpec("strategy", consumer, mailbox=mailbox)])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run_root)
        for message in ["one", "boom", "two", "three"]:
            mailbox.send_channel.send_nowait(message)
        await trio.sleep(1)
        assert received == [(1, "one"), (1, "boom"), (2, "two"), (2, "three")]
        assert mailbox.depth == 0
        nursery.cancel_scope.cancel()


async def test_child_ignoring_cancellation_is_abandoned_and_escalated(autojump_clock):
    events: list[tuple[str, str, str]] = []
    trigger = crash_trigger()
    journal = Journal()

    async def stubborn(ctx, *, task_status):
        task_status.started()
        with trio.CancelScope(shield=True):
            await trio.sleep(1000)

    inner = Supervisor(
        "venue",
        [ChildSpec("stubborn", stubborn, shutdown_timeout=2), ChildSpec("crashy", crashing_worker(journal, "crashy", trigger))],
        strategy=RestartStrategy.ONE_FOR_ALL,
    )
    root = Supervisor("root", [ChildSpec.for_supervisor(inner)], max_restarts=0, period=60)

    def emit(kind, actor, reason, payload):
        events.append((kind, actor, reason))
        if kind == "supervisor_gave_up":
            escalated_at.append(trio.current_time())

    escalated_at: list[float] = []
    async def crash_once():
        await trio.sleep(1)
        trigger.pull()  # one_for_all must stop "stubborn", which will not stop

    async with trio.open_nursery() as nursery:
        nursery.start_soon(crash_once)
        with pytest.raises(SupervisorGaveUp):
            await root.run_root(emit)
    abandoned_at = [e for e in events if e[0] == "child_abandoned"]
    assert abandoned_at == [("child_abandoned", "venue/stubborn", "still running 2s after it was cancelled")]
    assert any(kind == "supervisor_gave_up" and "ShutdownTimeout" in reason for kind, _, reason in events)
    # The escalation came at the timeout, not when the stubborn task finally ended (the
    # abandoned task still holds the root open until then: trio cannot kill a task).
    assert escalated_at and escalated_at[0] < 10


async def test_a_child_that_fails_before_ready_counts_toward_intensity(autojump_clock):
    attempts = 0

    async def never_ready(ctx, *, task_status):
        nonlocal attempts
        attempts += 1
        raise ValueError("cannot open the database")

    sup = Supervisor("root", [ChildSpec("db", never_ready)], max_restarts=2, period=60)
    with pytest.raises(SupervisorGaveUp, match="cannot open the database"):
        await sup.run_root()
    assert attempts == 3


async def test_snapshot_lists_every_node_with_mailbox_depth(autojump_clock):
    mailbox = Mailbox(capacity=8)

    async def idle(ctx, *, task_status):
        ctx.status["active"] = False
        task_status.started()
        await trio.sleep_forever()

    venue = Supervisor("venue:sim", [ChildSpec("strategy:a", idle, mailbox=mailbox)])
    root = Supervisor("root", [ChildSpec.for_supervisor(venue)], strategy=RestartStrategy.REST_FOR_ONE)
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run_root)
        mailbox.send_channel.send_nowait("queued")
        snap = root.snapshot()
        venue_node = snap["children"][0]
        assert venue_node["kind"] == "supervisor" and venue_node["state"] == "running"
        leaf = venue_node["children"][0]
        assert leaf["name"] == "strategy:a"
        assert leaf["mailbox"] == {"depth": 1, "capacity": 8}
        assert leaf["status"] == {"active": False}
        assert leaf["restarts"] == 0 and leaf["last_exit"] is None
        nursery.cancel_scope.cancel()


async def test_a_venue_that_keeps_failing_is_isolated_with_back_off_and_others_carry_on(autojump_clock):
    journal = Journal()
    healthy = trio.Event()
    events: list[tuple[str, str, float]] = []

    async def flaky_connection(ctx, *, task_status):
        journal.add("start flaky")
        if healthy.is_set():
            task_status.started()
            await trio.sleep_forever()
        raise ConnectionError("exchange unreachable")

    bad = Supervisor("venue:bad", [ChildSpec("conn", flaky_connection)], max_restarts=1, period=60)
    good = Supervisor("venue:good", [ChildSpec("conn-good", worker(journal, "conn-good"))])
    venues = Supervisor(
        "venues",
        [ChildSpec.for_supervisor(bad, restart_backoff=(1, 8)), ChildSpec.for_supervisor(good, restart_backoff=(1, 8))],
        max_restarts=1,
        period=60,
    )

    def emit(kind, actor, reason, payload):
        events.append((kind, actor, trio.current_time()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(venues.run_root, emit)
        await trio.sleep(40)
        isolations = [t for kind, actor, t in events if kind == "child_isolated" and actor == "venues/venue:bad"]
        # Each give-up of venue:bad isolates it; the delays double up to the cap of 8 s.
        gaps = [round(b - a) for a, b in zip(isolations, isolations[1:])]
        assert gaps[:4] == [1, 2, 4, 8] and set(gaps[4:]) <= {8}
        assert venues.state == "running", "isolation must not count toward the parent's intensity"
        assert journal.count("start conn-good") == 1 and "stop conn-good" not in journal.lines
        assert venues.snapshot()["children"][0]["state"] in ("isolated", "starting")
        healthy.set()  # the exchange is back: the next restart sticks
        await trio.sleep(10)
        assert venues.snapshot()["children"][0]["state"] == "running"
        nursery.cancel_scope.cancel()


async def test_children_added_and_replaced_while_running_without_counting_as_restarts(autojump_clock):
    journal = Journal()
    sup = Supervisor("s", [ChildSpec("a", worker(journal, "a")), ChildSpec("b", worker(journal, "b"))],
                     RestartStrategy.REST_FOR_ONE, max_restarts=0, period=60)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run_root)
        assert await sup.add_child(ChildSpec("c", worker(journal, "c"))) is None
        assert await sup.add_child(ChildSpec("c", worker(journal, "c2"))) == "s already has a child named c"
        between: list[str] = []

        async def note() -> None:
            between.append(journal.lines[-1])

        # Replaced alone (not rest_for_one: this is an edit, not a crash), in its place.
        assert await sup.replace_child(ChildSpec("a", worker(journal, "a2")), between=note) is None
        assert between == ["stop a"]
        assert journal.lines == ["start a", "start b", "start c", "stop a", "start a2"]
        snapshot = sup.snapshot()
        assert [c["name"] for c in snapshot["children"]] == ["a", "b", "c"]
        assert snapshot["children"][0]["incarnation"] == 2 and snapshot["restarts"] == 0  # max_restarts=0 held
        # A guard sees the child's snapshot just before the stop and may refuse: nothing changes.
        refused = await sup.replace_child(ChildSpec("b", worker(journal, "b2")), guard=lambda node: f"no: {node['state']}")
        assert refused == "no: running" and journal.lines[-1] == "start a2"
        assert await sup.replace_child(ChildSpec("zz", worker(journal, "zz"))) == "s has no child named zz"
        nursery.cancel_scope.cancel()
    assert journal.lines[-3:] == ["stop c", "stop b", "stop a2"]  # the added one stops first
    assert await sup.add_child(ChildSpec("d", worker(journal, "d"))) == "s is not running (it is stopped); try again once it is"
