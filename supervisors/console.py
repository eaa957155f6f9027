"""What ``limitline run`` prints on the terminal while it runs (stdout; notices go to stderr).

- One line per event worth a person's attention (:data:`ECHOED`: orders, fills, cancels,
  breakers, pauses, venues, restarts, reconciliation differences, protection); blocked signals
  (``blocked``, one per candle a rule fired and could not act) only with ``-v``; everything
  is in the event log anyway (``/events``, the dashboard's feed).
- A fee is never printed without its currency; every time is labelled UTC.
- A line when a replay has released its last candle (``replay_finished``).
- Every ``--summary-every`` seconds, one summary line: strategies by state, open orders,
  fills, realized P&L per quote currency and fees per currency (:func:`summary_line`).

The formatting is plain functions of an event or a summary (tested as such); the periodic
task reads the same summary as ``/status`` (:func:`supervisors.web.views.summary`).
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import time
from typing import Any, Callable, TextIO

import trio

from actors.messages import RecordEvent
from supervisors.display import clock, money
from supervisors.logs import EVENTS, event_fields, json_line, utc
from supervisors.web import views

#: Events worth a line on the console.
ECHOED = frozenset({
    "order_placed", "fill", "order_rejected", "order_canceled", "order_expired", "strategy_active",
    "preflight_failed", "breaker_open", "breaker_half_open", "breaker_closed", "strategy_inactive",
    "venue_isolated", "venue_recovered", "child_isolated", "order_unknown", "order_resolved", "strategy_paused",
    "strategy_resumed", "venue_reconciled", "venue_rate_limited", "exchange_error", "child_exited",
    "child_restarting", "supervisor_gave_up", "child_abandoned", "reconcile_difference", "replay_finished",
    "config_applied", "config_rejected", "config_unchanged", "config_warning", "strategy_reconfigured", "strategy_removed",
    # What protects a holding or a position on the exchange, and what happened to it.
    "protection_placed", "protection_resized", "protection_canceled", "protection_refused", "protection_escalating",
    "protection_escalated", "protection_escalation_dropped", "closed_by_protection", "unprotected", "close_held",
    "market_settings_set",
})
#: Echoed only with ``-v``: one per candle a rule fired and could not act.
VERBOSE_ONLY = frozenset({"blocked"})
#: How often the summary line is printed unless ``--summary-every`` says otherwise.
DEFAULT_SUMMARY_SECONDS = 60.0
DETAIL_KEYS = ("side", "price", "amount", "fee")


def event_line(event: RecordEvent, verbose: bool = False) -> str | None:
    """The console line for ``event``, or None when it is not shown (``blocked`` without
    ``verbose``, and everything outside :data:`ECHOED`)."""
    if event.kind not in ECHOED and not (verbose and event.kind in VERBOSE_ONLY):
        return None
    if event.kind == "replay_finished":
        return (f"{clock(event.at)}  {event.kind:<20}  {event.actor}  the replay has ended ({event.reason}); "
                "no new candles will come, open orders rest. Ctrl-C stops.")
    who = event.strategy or event.actor
    detail = " ".join(f"{k}={v}" for k, v in event.payload.items() if k in DETAIL_KEYS)
    if "fee" in event.payload:
        # A fee means nothing without its currency.
        detail += f" {event.payload.get('fee_currency') or '(currency not reported)'}"
    parts = [clock(event.at), f"{event.kind:<20}", who]
    if event.client_order_id:
        parts.append(event.client_order_id)
    if detail:
        parts.append(detail)
    if event.rule:
        parts.append(f"rule={event.rule}")
    if event.reason:
        parts.append(f"({event.reason})")
    return printable("  ".join(parts))


#: Control characters (an exchange's or a Python strategy's text may carry terminal escapes
#: that clear the screen or forge lines): each is shown as its escape, never sent as is.
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)}


def printable(text: str) -> str:
    """``text`` with control characters written out (``\\x1b``), one line always."""
    return text.translate(_CONTROLS)


class EventEcho:
    """The writer's ``echo``: prints each committed event's line, if it has one, and hands
    it to the events logger (the ``--log-file``, when one is set up).

    ``quiet``: print nothing (the log file still gets the lines); ``log_format``: ``text``
    or ``json`` (one JSON object per line, :func:`supervisors.logs.json_line`)."""

    def __init__(self, verbose: bool = False, out: TextIO | None = None, *, quiet: bool = False,
                 log_format: str = "text") -> None:
        self.verbose = verbose
        self.out = out
        self.quiet = quiet
        self.log_format = log_format

    def __call__(self, event: RecordEvent) -> None:
        line = event_line(event, self.verbose)
        if line is None:
            return
        if _events_log.isEnabledFor(logging.INFO):
            _events_log.info("%s", line, extra={"event": event})
        if self.quiet:
            return
        if self.log_format == "json":
            line = json_line({"time": utc(event.at), "level": "INFO", "logger": EVENTS, "message": line,
                              "event": event_fields(event)})
        try:
            print(line, file=self.out or sys.stdout, flush=True)
        except OSError:
            pass  # the terminal is gone (closed after a SIGHUP): the event log has it all


_events_log = logging.getLogger(EVENTS)


def summary_line(summary: dict[str, Any], fills: int, at: float) -> str:
    """One line from a ``/status`` summary and the number of fills recorded::

        19:50:03 UTC  summary               strategies 2: active 2, paused 0  open orders 1  fills 14  realized P&L 12.87 USD  fees 2.52 USD, 0.00099063 BTC

    Every state a strategy is in is counted (``inactive 1`` appears when one is); active
    and paused always. Realized P&L is per quote currency, fees per currency charged."""
    strategies = summary.get("strategies", {})
    by_state = dict(strategies.get("by_state", {}))
    counts = [f"active {by_state.pop('active', 0)}", f"paused {by_state.pop('paused', 0)}"]
    counts += [f"{state} {count}" for state, count in sorted(by_state.items())]
    realized = ", ".join(money(v, c) for c, v in summary.get("realized_pnl", {}).items()) or "0"
    fees = ", ".join(money(v, c) for c, v in summary.get("fees_paid", {}).items()) or "none"
    return (f"{clock(at)}  {'summary':<20}  strategies {strategies.get('total', 0)}: {', '.join(counts)}"
            f"  open orders {strategies.get('open_orders', 0)}  fills {fills}  realized P&L {realized}  fees {fees}")


def fills_recorded(connection: sqlite3.Connection) -> int:
    """Every fill in the store (this run and the runs it continues)."""
    return connection.execute("SELECT count(*) FROM fills").fetchone()[0]


async def print_summaries(
    app: Any, every: float, out: TextIO | None = None, now: Callable[[], float] = time.time
) -> None:
    """Print :func:`summary_line` every ``every`` seconds until cancelled. ``app``: a
    started :class:`supervisors.app.App` (its tree, its web facts and its store)."""
    while True:
        await trio.sleep(every)
        web = app.web
        summary = views.summary(web.facts, app.snapshot(), web.strategies, web.venues, now())
        fills = await app.store.read(fills_recorded)
        print(summary_line(summary, fills, now()), file=out or sys.stdout, flush=True)
