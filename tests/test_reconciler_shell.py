"""The reconciler's shell under the autojump clock: a venue slower than the interval is
reconciled more slowly, never skipped for good (issue 13, review F4)."""

from __future__ import annotations

import functools

import trio

from actors.mailbox import Mailbox
from actors.messages import ExchangeSnapshot, LedgerSnapshot, LedgerSnapshotRequest, RecordEvent, SnapshotRequest
from actors.reconciler.shell import reconciler_actor
from actors.runtime import ActorEnv
from store.access import SqliteReader
from store.db import open_store
from supervisors.tree import ChildSpec, Supervisor


class SlowVenue:
    """A connection whose snapshots take ``delay`` seconds (one at a time, as a connection
    serves them), an instant ledger and a writer that keeps the events."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.boxes = {name: Mailbox(256) for name in ("connection:perp", "ledger", "writer", "reconciler")}
        self.directory = {name: box.send_channel for name, box in self.boxes.items()}
        self.snapshot_requests = 0
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
        async for message in self.boxes["connection:perp"].open_receiver():
            assert isinstance(message, SnapshotRequest)
            self.snapshot_requests += 1
            self._note()
            await trio.sleep(self.delay)  # the venue's calls at its rate limit
            snapshot = ExchangeSnapshot("perp", (), {}, trio.current_time(), request_id=message.request_id)
            await self.directory[message.reply_to].send(snapshot)

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
    async with trio.open_nursery() as nursery:
        nursery.start_soon(venue.run)
        await nursery.start(sup.run_root)
        await venue.until(until)
        nursery.cancel_scope.cancel()
    return sup


async def test_a_snapshot_slower_than_a_one_second_interval_is_still_reconciled(tmp_path, autojump_clock):
    # A perpetual snapshot takes 3 s at the venue's rate limit; the interval is 1 s (valid).
    venue = SlowVenue(delay=3.0)
    await _run(tmp_path, venue, lambda v: v.snapshot_requests == 20, interval=1.0)
    assert "venue_reconciled" in venue.kinds()
    assert "reconcile_skipped" not in venue.kinds(), [e.reason for e in venue.events]


async def test_a_snapshot_later_than_the_timeout_is_used_when_it_comes_and_never_asked_twice(tmp_path, autojump_clock):
    venue = SlowVenue(delay=45.0)
    start = trio.current_time()
    await _run(tmp_path, venue, lambda v: v.kinds().count("venue_reconciled") == 1, interval=1.0, snapshot_timeout=30.0)
    skipped = [e for e in venue.events if e.kind == "reconcile_skipped"]
    assert skipped and all(
        e.reason == "venue perp is slower than 30 s to answer a snapshot (reconciler.snapshot_timeout_seconds); "
        "its answer is used when it comes" for e in skipped
    )
    # Two cycles of 45 s each, back to back: each late answer was used at once, and no
    # second request was queued behind one still being served.
    assert trio.current_time() - start < 2 * 45 + 5
    assert venue.snapshot_requests == 2
