"""The ledger's checkpoint: a rebuild that starts from it and folds the entries after it is
the rebuild from the journal's start, whatever the journal held (late fills, fees in three
currencies, refused entries, reservations forgotten and read back), and the store keeps it
with the right journal position or not at all."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any
from unittest.mock import patch

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import actors.ledger.core as ledger_core
import actors.ledger.shell as ledger_shell
from actors.ledger.core import LedgerCore
from actors.messages import (
    WRITER,
    FillReport,
    JournalEntry,
    OrderCanceled,
    RecordJournal,
    RecordLedgerCheckpoint,
    Release,
    Reserve,
)
from actors.runtime import ActorEnv
from actors.writer.core import plan_batch
from exchange.records import Side
from store.access import SqliteReader
from store.checkpoint import decode, encode
from store.db import load_journal, load_journal_page, load_ledger_checkpoint, open_store, write_batch

ACCOUNTS = {"a": ("sim", "BTC", "USD"), "b": ("sim", "BTC", "USD")}
OPERATIONS = ("buy", "sell", "fill", "fill_part", "cancel", "cancel_filled", "release", "duplicate", "late")


def journal(sends) -> list[JournalEntry]:
    return [e for s in sends if s.to == WRITER and isinstance(s.message, RecordJournal) for e in s.message.entries]


def fold_state(core: LedgerCore) -> tuple[Any, ...]:
    """Everything the fold decides: accounts and reservations in the fold's order, and
    when the forgetting's next pass is due."""
    return (
        list(core.accounts.items()),
        list(core.reservations.items()),
        core._forgetting._next_sweep,
        [(strategy, list(by_cid)) for strategy, by_cid in core._open.items()],
    )


def message_for(op: str, pick: int, size: int, step: int, cids: list[str], fills: list[FillReport]) -> Any:
    strategy = "ab"[pick % 2]
    if op in ("buy", "sell") or not cids:
        cid = f"c{step}"
        cids.append(cid)
        side = Side.SELL if op == "sell" else Side.BUY
        amount = D(size) / (1000 if side is Side.SELL else 100)
        return Reserve(cid, strategy, side, "BTC/USD", "BTC", "USD", D(90 + pick), amount, D("0.001"), f"strategy:{strategy}")
    # "late" reaches back to the first orders, long closed and maybe forgotten.
    cid = cids[pick % min(len(cids), 3)] if op == "late" else cids[-1 - pick % len(cids)]
    if op in ("fill", "fill_part", "late"):
        fee_currency = ("USD", "BTC", "BNB")[pick % 3]
        report = FillReport("sim", cid, f"x{cid}", f"t{step}", "BTC/USD", Side.BUY, D(88 + pick), D(size) / 1000,
                            D(size) / 10_000, fee_currency, float(step), op != "fill_part")
        fills.append(report)
        return report
    if op == "duplicate" and fills:
        return fills[pick % len(fills)]
    if op in ("cancel", "cancel_filled"):
        return OrderCanceled(cid, "expired", float(step), expired=True, filled=D(size) / 1000 if op == "cancel_filled" else None)
    return Release(cid, "released")


def run(operations, keep: int) -> tuple[LedgerCore, list[JournalEntry], list[tuple[int, Any]]]:
    """Drive a ledger as its shell does (a late fill's reservation read back from the
    journal first), taking a checkpoint before every operation."""
    with patch.object(ledger_core, "KEEP_FINISHED_ORDERS", keep):
        core = LedgerCore(ACCOUNTS)
        entries = core.allocate("a", D(1000), D(5), 0.0, "test", D(100)) + core.allocate("b", D(500), D(0), 0.0, "test")
        cids: list[str] = []
        fills: list[FillReport] = []
        checkpoints = []
        for step, (op, pick, size) in enumerate(operations):
            checkpoints.append((len(entries), core.checkpoint()))
            batch = [message_for(op, pick, size, step, cids, fills)]
            missing = core.unknown_orders(batch)
            if missing:
                core.recall([e for e in entries if e.client_order_id in missing])
            entries += journal(core.handle_batch(batch, float(step)))
        checkpoints.append((len(entries), core.checkpoint()))
    return core, entries, checkpoints


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(OPERATIONS), st.integers(0, 40), st.integers(1, 9)), max_size=80),
    st.integers(1, 4),
)
def test_a_rebuild_from_any_checkpoint_is_the_rebuild_from_scratch(operations, keep):
    core, entries, checkpoints = run(operations, keep)
    with patch.object(ledger_core, "KEEP_FINISHED_ORDERS", keep):
        scratch = LedgerCore.from_journal(entries, ACCOUNTS)
        assert fold_state(core) == fold_state(scratch), "the live state is the fold (a recalled order stays apart)"
        for position, checkpoint in checkpoints:
            rebuilt = LedgerCore.from_checkpoint(decode(encode(checkpoint)), ACCOUNTS)
            for entry in entries[position:]:
                rebuilt.apply(entry)
            assert fold_state(rebuilt) == fold_state(scratch)
            rebuilt.check_invariants()


def test_many_orders_forgotten_and_a_late_fill_read_back_rebuild_the_same_from_a_checkpoint():
    """Past the forgetting's passes, with a late fill of a forgotten order in between."""
    operations = [("buy", i, 3) for i in range(30)] + [("cancel", 0, 3)] * 30
    operations = [op for pair in zip(operations[:30], operations[30:]) for op in pair] + [("late", 0, 1), ("buy", 1, 2)]
    core, entries, checkpoints = run(operations, 2)
    assert core.recalled, "the late fill's order was forgotten and read back"
    with patch.object(ledger_core, "KEEP_FINISHED_ORDERS", 2):
        scratch = LedgerCore.from_journal(entries, ACCOUNTS)
        position, checkpoint = checkpoints[40]
        rebuilt = LedgerCore.from_checkpoint(decode(encode(checkpoint)), ACCOUNTS)
        for entry in entries[position:]:
            rebuilt.apply(entry)
        assert fold_state(rebuilt) == fold_state(scratch) == fold_state(core)


def test_the_store_keeps_the_latest_checkpoint_at_its_journal_position_or_none(tmp_path):
    core, entries, checkpoints = run([("buy", i, 2) for i in range(6)] + [("fill", 0, 2), ("release", 1, 1)], 3)
    connection = open_store(tmp_path / "s.sqlite")
    # The journal in two commits, a checkpoint inside the second (after its third entry).
    middle = next(c for c in checkpoints if c[0] > len(entries) // 2)
    write_batch(connection, plan_batch([RecordJournal(tuple(entries[:3]))])[0])
    batch, _ = plan_batch([
        RecordJournal(tuple(entries[3:middle[0]])),
        RecordLedgerCheckpoint(middle[1], middle[0]),
        RecordJournal(tuple(entries[middle[0]:])),
    ])
    write_batch(connection, batch)
    seq, stored = load_ledger_checkpoint(connection)
    assert seq == middle[0]
    tail, _ = load_journal_page(connection, after=seq, limit=1000)
    assert tail == entries[seq:]
    with patch.object(ledger_core, "KEEP_FINISHED_ORDERS", 3):
        rebuilt = LedgerCore.from_checkpoint(stored, ACCOUNTS)
        for entry in tail:
            rebuilt.apply(entry)
        scratch = LedgerCore.from_journal(load_journal(connection), ACCOUNTS)
    assert fold_state(rebuilt) == fold_state(scratch) == fold_state(core)
    # A checkpoint whose count the journal does not agree with (entries the state lacks)
    # is not written; the previous one stays.
    write_batch(connection, plan_batch([RecordLedgerCheckpoint(checkpoints[-1][1], len(entries) - 1)])[0])
    assert load_ledger_checkpoint(connection)[0] == middle[0]
    write_batch(connection, plan_batch([RecordLedgerCheckpoint(checkpoints[-1][1], len(entries))])[0])
    assert load_ledger_checkpoint(connection)[0] == len(entries)
    assert connection.execute("SELECT count(*) FROM ledger_checkpoints").fetchone()[0] == 1


class Context:
    name = "ledger"
    status_provider = None
    incarnation = 1

    def __init__(self, inbox) -> None:
        self.inbox = inbox
        self.status: dict[str, Any] = {}


class RecordingReader(SqliteReader):
    """The real reader, noting where each fold of the journal started."""

    def __init__(self, path) -> None:
        super().__init__(path)
        self.folds_after: list[int] = []

    async def journal_pages(self, page_size: int, after: int = 0):
        self.folds_after.append(after)
        async for page in super().journal_pages(page_size, after):
            yield page


def orders(core: LedgerCore, first: int, count: int) -> list[JournalEntry]:
    entries = []
    for i in range(first, first + count):
        for message in (Reserve(f"c{i}", "a", Side.BUY, "BTC/USD", "BTC", "USD", D("100"), D("0.01"), D("0.001"), "strategy:a"),
                        Release(f"c{i}", "canceled")):
            entries += journal(core.handle(message, float(i)))
    return entries


async def test_the_ledger_checkpoints_a_long_fold_and_every_so_many_entries_and_restarts_from_it(tmp_path, monkeypatch):
    monkeypatch.setattr(ledger_shell, "CHECKPOINT_EVERY", 100)
    live = LedgerCore()
    entries = live.allocate("a", D(1_000_000), D(0), 0.0, "test") + orders(live, 0, 80)  # 161 entries
    store = tmp_path / "s.sqlite"
    connection = open_store(store)
    write_batch(connection, plan_batch([RecordJournal(tuple(entries))])[0])

    async def start_ledger(nursery, reader):
        inbox_send, inbox = trio.open_memory_channel[Any](100)
        to_writer, from_ledger = trio.open_memory_channel[Any](100)
        ctx = Context(inbox)
        await nursery.start(lambda task_status: ledger_shell.ledger_actor(
            ctx, {}, ActorEnv({WRITER: to_writer, "strategy:a": trio.open_memory_channel[Any](1000)[0]}, reader),
            task_status=task_status))
        return ctx, inbox_send, from_ledger

    async with trio.open_nursery() as nursery:
        # A fold of more than CHECKPOINT_EVERY entries is checkpointed at once.
        reader = RecordingReader(store)
        ctx, inbox, from_ledger = await start_ledger(nursery, reader)
        assert reader.folds_after == [0]
        checkpoint = from_ledger.receive_nowait()
        assert isinstance(checkpoint, RecordLedgerCheckpoint) and checkpoint.seq == len(entries)
        write_batch(connection, plan_batch([checkpoint])[0])
        # Running, it checkpoints again after 100 more entries, behind their journal.
        for message in [m for i in range(80, 140) for m in (
                Reserve(f"c{i}", "a", Side.BUY, "BTC/USD", "BTC", "USD", D("100"), D("0.01"), D("0.001"), "strategy:a"),
                Release(f"c{i}", "canceled"))]:
            await inbox.send(message)
        sent = []
        while not any(isinstance(m, RecordLedgerCheckpoint) for m in sent):
            sent.append(await from_ledger.receive())
        write_batch(connection, plan_batch(sent)[0])
        written = [e for m in sent if isinstance(m, RecordJournal) for e in m.entries]
        assert sent[-1].seq == len(entries) + len(written) >= len(entries) + 100
        assert load_ledger_checkpoint(connection)[0] == sent[-1].seq
        nursery.cancel_scope.cancel()

    # A restart folds only what follows the checkpoint, into the state a fold from scratch makes.
    more = orders(LedgerCore.from_journal(load_journal(connection)), 1000, 10)
    write_batch(connection, plan_batch([RecordJournal(tuple(more))])[0])
    async with trio.open_nursery() as nursery:
        reader = RecordingReader(store)
        ctx, _, _ = await start_ledger(nursery, reader)
        rebuilt = ctx.status_provider()["accounts"]
        nursery.cancel_scope.cancel()
    assert reader.folds_after == [sent[-1].seq]
    assert rebuilt == LedgerCore.from_journal(load_journal(connection)).snapshot()
