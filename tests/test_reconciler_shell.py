"""The reconciler's shell under the autojump clock: a venue slower than the interval is
reconciled more slowly, never skipped for good (issue 13, review F4)."""

from __future__ import annotations

import functools

import pytest
import trio
import trio.testing

from actors.mailbox import Mailbox
from actors.messages import ExchangeSnapshot, LedgerSnapshot, LedgerSnapshotRequest, RecordEvent, SnapshotRequest
from actors.reconciler.shell import reconciler_actor
from actors.runtime import ActorEnv
from store.access import SqliteReader
from store.db import open_store
from supervisors.tree import ChildSpec, Supervisor


@pytest.fixture
def clock():
    """Virtual time that jumps once every task has waited 20 ms of real time: the store's
    reads run in a thread, which a clock jumping at once would not wait for."""
    return trio.testing.MockClock(autojump_threshold=0.02)


class SlowVenue:
    """A connection whose snapshots take ``delay`` seconds (one at a time, as a connection
    serves them), an instant ledger and a writer that keeps the events."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.boxes = {name: Mailbox(256) for name in ("connection:perp", "ledger", "writer", "reconciler")}
        self.directory = {name: box.send_channel for name, box in self.boxes.items()}
        #: snapshot rounds served (each answers every request that came during it)
        self.rounds = 0
        self.events: list[RecordEvent] = []
        self._changed = trio.Event()

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    async def until(self, predicate) -> None:
        while not predicate(self):
            await self._changed.wait()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._connection)
            nursery.start_soon(self._ledger)
            nursery.start_soon(self._writer)

    async def _connection(self) -> None:
        inbox = self.boxes["connection:perp"].open_receiver()
        async for message in inbox:
            waiting = [message]
            self.rounds += 1
            await trio.sleep(self.delay)  # the venue's calls at its rate limit
            # Requests that came meanwhile join the round, as the live connection's do.
            while True:
                try:
                    waiting.append(inbox.receive_nowait())
                except trio.WouldBlock:
                    break
            for request in waiting:
                assert isinstance(request, SnapshotRequest)
                snapshot = ExchangeSnapshot("perp", (), {}, trio.current_time(), request_id=request.request_id)
                await self.directory[request.reply_to].send(snapshot)
            self._note()

    async def _ledger(self) -> None:
        async for message in self.boxes["ledger"].open_receiver():
            assert isinstance(message, LedgerSnapshotRequest)
            await self.directory[message.reply_to].send(LedgerSnapshot(message.request_id, {}, {}))

    async def _writer(self) -> None:
        async for message in self.boxes["writer"].open_receiver():
            if isinstance(message, RecordEvent):
                self.events.append(message)
                self._note()

    def _note(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


async def _run(tmp_path, venue: SlowVenue, until, **options) -> Supervisor:
    open_store(tmp_path / "s.sqlite").close()
    env = ActorEnv(venue.directory, SqliteReader(tmp_path / "s.sqlite"))
    start = functools.partial(reconciler_actor, venues=["perp"], markets={}, env=env, **options)
    sup = Supervisor("root", [ChildSpec("reconciler", start, mailbox=venue.boxes["reconciler"])])
    with trio.fail_after(3600):  # virtual seconds
        async with trio.open_nursery() as nursery:
            nursery.start_soon(venue.run)
            await nursery.start(sup.run_root)
            await venue.until(until)
            nursery.cancel_scope.cancel()
    return sup


async def test_a_snapshot_slower_than_a_one_second_interval_is_still_reconciled(tmp_path, clock):
    # A perpetual snapshot takes 3 s at the venue's rate limit; the interval is 1 s (valid).
    venue = SlowVenue(delay=3.0)
    await _run(tmp_path, venue, lambda v: v.rounds == 8, interval=1.0)
    assert "venue_reconciled" in venue.kinds()
    assert "reconcile_skipped" not in venue.kinds(), [e.reason for e in venue.events]


async def test_a_snapshot_later_than_the_timeout_is_used_when_it_comes(tmp_path, clock):
    venue = SlowVenue(delay=45.0)
    start = trio.current_time()
    await _run(tmp_path, venue, lambda v: v.kinds().count("venue_reconciled") == 1, interval=1.0, snapshot_timeout=30.0)
    skipped = [e for e in venue.events if e.kind == "reconcile_skipped"]
    assert skipped and all(
        e.reason == "venue perp is slower than 30 s to answer a snapshot (reconciler.snapshot_timeout_seconds); "
        "its answer is used when it comes" for e in skipped
    )
    # Two rounds of 45 s each, back to back: each late answer was used as it came.
    assert trio.current_time() - start < 2 * 45 + 5


class FailingRound(SlowVenue):
    """A connection whose first round fails: it answers nothing and waits to be asked again
    (the live connection clears its askers when a snapshot call fails)."""

    async def _connection(self) -> None:
        inbox = self.boxes["connection:perp"].open_receiver()
        await inbox.receive()  # the first request: its round fails, never answered
        self.rounds += 1
        async for request in inbox:
            self.rounds += 1
            await self.directory[request.reply_to].send(
                ExchangeSnapshot("perp", (), {}, trio.current_time(), request_id=request.request_id))
            self._note()


async def test_a_venue_whose_round_failed_is_asked_again(tmp_path, clock):
    venue = FailingRound(delay=0)
    await _run(tmp_path, venue, lambda v: "venue_reconciled" in v.kinds(), interval=1.0, snapshot_timeout=30.0)
    assert venue.kinds().count("reconcile_skipped") == 1
