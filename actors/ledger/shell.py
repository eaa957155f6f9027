"""The ledger actor: rebuilds from the journal, then handles one message at a time."""

from __future__ import annotations

from typing import Any, Mapping

import trio

from actors.ledger.core import LedgerCore
from actors.messages import WRITER, RecordJournal, Send
from actors.runtime import ActorContext, ActorEnv, deliver, serve
from actors.strategy.settings import Allocation


async def ledger_actor(
    ctx: ActorContext,
    allocations: Mapping[str, Allocation],
    env: ActorEnv,
    accounts_of: Mapping[str, tuple[str, str, str]] | None = None,
    *,
    task_status: trio.TaskStatus[None],
) -> None:
    assert ctx.inbox is not None
    # Restart path equals cold-start path: the state is the fold of the journal.
    core = LedgerCore.from_journal(await env.store.journal(), accounts_of)
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

    async def recall(batch: list[Any]) -> None:
        """A fill of an order whose reservation left memory long ago: read it back."""
        missing = core.unknown_orders(batch)
        if missing:
            core.recall(await env.store.journal_of(missing))

    ctx.status_provider = lambda: {"accounts": core.snapshot()}
    task_status.started()
    # Entries are checked where they apply: one that would break an invariant is refused
    # with its reason, so no batch's journal or replies are ever dropped by a crash.
    await serve(ctx.inbox, core.handle, env, handle_batch=core.handle_batch, before_batch=recall)
