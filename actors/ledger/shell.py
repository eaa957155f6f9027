"""The ledger actor: rebuilds from the journal, then handles one message at a time."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Awaitable, Mapping

import trio

from actors.ledger.core import LedgerCore
from actors.ledger.position_ledger_core import PositionLedgerCore
from actors.messages import WRITER, RecordJournal, RecordLedgerCheckpoint, RecordPositionJournal, Send
from actors.runtime import ActorContext, ActorEnv, deliver, serve
from actors.strategy.settings import Allocation

#: Journal entries read and folded at a time at a rebuild (about 1 KB each in memory).
JOURNAL_PAGE = 5_000
#: Journal entries between two checkpoints of the ledger's state: a restart folds at most
#: about this many (0.6 s at 12 us an entry), however long the journal. A checkpoint copies
#: the accounts and the reservations in memory (open ones and the 1,000 most recently
#: closed: a few milliseconds) and the writer encodes it on its thread.
CHECKPOINT_EVERY = 50_000


async def ledger_actor(
    ctx: ActorContext,
    allocations: Mapping[str, Allocation],
    env: ActorEnv,
    accounts_of: Mapping[str, tuple[str, str, str]] | None = None,
    positions: Mapping[str, tuple[str, Decimal]] | None = None,
    settlement: str = "USDT",
    *,
    task_status: trio.TaskStatus[None],
) -> None:
    """``positions``: the strategies on perpetual venues, each with its symbol and the
    collateral allocated to it (in ``settlement``); their book is the position journal's fold."""
    assert ctx.inbox is not None
    # Restart path equals cold-start path: the state is the fold of the journal, folded a
    # page at a time (a months-long journal is never in memory whole).
    # From the latest checkpoint, if the store has one: the fold of every entry up to it.
    stored = await env.store.ledger_checkpoint()
    if stored is None:
        after, core = 0, LedgerCore.from_journal((), accounts_of)
    else:
        after, core = stored[0], LedgerCore.from_checkpoint(stored[1], accounts_of)
    folded = 0
    async for page in env.store.journal_pages(JOURNAL_PAGE, after=after):
        for entry in page:
            core.apply(entry)
        folded += len(page)
    now = env.clock.now()
    new = []
    for strategy, allocation in allocations.items():
        if strategy not in core.accounts:
            new += core.allocate(
                strategy, allocation.quote, allocation.base, now, "allocation from the config", allocation.base_cost
            )
    core.check_invariants()
    if new:
        await deliver(env.directory, [Send(WRITER, RecordJournal(tuple(new)))])
    # The journal's entries are numbered from 1 without gaps: the state is the fold of the
    # first ``position``. A long fold is checkpointed at once.
    position = after + folded + len(new)
    since_checkpoint = folded + len(new)
    if since_checkpoint >= CHECKPOINT_EVERY:
        await deliver(env.directory, [Send(WRITER, RecordLedgerCheckpoint(core.checkpoint(), position))])
        since_checkpoint = 0
    book: PositionLedgerCore | None = None
    if positions:
        symbols = {name: symbol for name, (symbol, _) in positions.items()}
        book = PositionLedgerCore.from_journal(await env.store.position_journal(), symbols, settlement)
        allocated = book.allocate({name: amount for name, (_, amount) in positions.items()}, now)
        book.book.check_invariants()
        if allocated:
            await deliver(env.directory, [Send(WRITER, RecordPositionJournal(tuple(allocated)))])

    async def recall(missing: set[str]) -> None:
        """Fills of orders whose reservations left memory long ago: read them back."""
        core.recall(await env.store.journal_of(missing))

    def handle_spot(batch: list[Any], now: float) -> list[Send]:
        """The spot core's answer, and a checkpoint after it when one is due (sent after the
        batch's journal: the writer records it with the last of those entries)."""
        nonlocal position, since_checkpoint
        out = core.handle_batch(batch, now)
        if out and isinstance(out[0].message, RecordJournal):  # the batch's journal comes first
            written = len(out[0].message.entries)
            position += written
            since_checkpoint += written
            if since_checkpoint >= CHECKPOINT_EVERY:
                out.append(Send(WRITER, RecordLedgerCheckpoint(core.checkpoint(), position)))
                since_checkpoint = 0
        return out

    def handle_batch(batch: list[Any], now: float) -> list[Send]:
        """Spot and position messages go to their own core (they never touch the same
        strategy, so their relative order does not matter; each keeps its own)."""
        if book is None:
            return handle_spot(batch, now)
        mine = [m for m in batch if book.owns(m)]
        spot = [m for m in batch if not book.owns(m)] if mine else batch
        out = book.handle_batch(mine, now) if mine else []
        return book.with_view(handle_spot(spot, now) if spot else []) + out

    def recall_spot(batch: list[Any]) -> Awaitable[None] | None:
        missing = core.unknown_orders(batch if book is None else [m for m in batch if not book.owns(m)])
        return recall(missing) if missing else None

    def status() -> dict[str, Any]:
        out: dict[str, Any] = {"accounts": core.snapshot()}
        if book is not None:
            out["positions"] = book.snapshot()["positions"]
            out["collateral"] = book.snapshot()["collateral"]
        return out

    ctx.status_provider = status
    task_status.started()
    # Entries are checked where they apply: one that would break an invariant is refused
    # with its reason, so no batch's journal or replies are ever dropped by a crash.
    await serve(ctx.inbox, core.handle, env, handle_batch=handle_batch, before_batch=recall_spot)
