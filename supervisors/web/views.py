"""What the read endpoints answer, computed from the supervision tree's snapshot (and, for a
page of strategies, what :mod:`supervisors.web.queries` read from the store).

Plain functions of plain data, no I/O: the same snapshot always gives the same answer.
Every amount leaves as a plain decimal string (``"0"``, ``"7954.33"``; never ``"0E-10"``).

- :func:`summary`: ``/status``, a few kilobytes whatever the number of strategies;
- :func:`strategy_rows`: one row per strategy (``/status/strategies``, paged);
- :func:`tree_view`: the supervision tree without the actors' own reports;
- :func:`venue_rows` and :func:`readiness`: each venue, and whether all are ready.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Iterator

import attrs

#: A decimal in exponent notation, as ``str(Decimal)`` writes very small or round values.
_EXPONENT = re.compile(r"^-?\d+(\.\d+)?E[+-]?\d+$")


@attrs.frozen
class StrategyFacts:
    """What the config says about a strategy (the snapshot knows only what it reports)."""

    name: str
    venue: str
    symbol: str
    mode: str

    @property
    def base(self) -> str:
        return self.symbol.split("/")[0]

    @property
    def quote(self) -> str:
        """The quote asset, without a perpetual's settlement suffix (``BTC/USDT:USDT`` -> ``USDT``)."""
        return self.symbol.split("/")[1].split(":")[0]

    @property
    def settle(self) -> str | None:
        """A perpetual's settlement asset (``BTC/USDT:USDT`` -> ``USDT``); None on spot."""
        _, colon, settle = self.symbol.partition(":")
        return settle if colon else None


def plain(value: Any) -> str | None:
    """``value`` (a Decimal, or decimal text) as plain decimal text without exponent or
    trailing zeros: ``0E-10`` -> ``"0"``, ``"1.50"`` -> ``"1.5"``; None stays None."""
    if value is None:
        return None
    try:
        number = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        return str(value)
    if not number.is_finite():
        return str(number)
    if number == 0:
        return "0"
    text = format(number, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


#: The decimal places a row shows of a figure computed by division (an average entry price,
#: realized P&L): the ledger and the store keep every digit; a person reads eight.
SHOWN_PLACES = Decimal("1E-8")


def shown(value: Any) -> str | None:
    """``value`` rounded half-even to :data:`SHOWN_PLACES` for display, as :func:`plain`
    writes it (``'9996.666666666666666666666667'`` -> ``'9996.66666667'``)."""
    if value is None:
        return None
    try:
        return plain(Decimal(value).quantize(SHOWN_PLACES, rounding=ROUND_HALF_EVEN))
    except (InvalidOperation, TypeError, ValueError):
        return plain(value)  # beyond the context's precision, or not a number: as it is


def plain_all(value: Any) -> Any:
    """``value`` with every Decimal, and every string in exponent notation, made plain."""
    if isinstance(value, dict):
        return {k: plain_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_all(v) for v in value]
    if isinstance(value, Decimal) or (isinstance(value, str) and _EXPONENT.match(value)):
        return plain(value)
    return value


def walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("children", []):
        yield from walk(child)


def index(tree: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every node of a snapshot by name."""
    return {node["name"]: node for node in walk(tree)}


# ---------------------------------------------------------------- strategies


def strategy_row(facts: StrategyFacts, nodes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One strategy: its state and why, mode, breaker, holdings and P&L as the ledger says
    (the strategy's own status repeats the ledger's last answer), open orders count."""
    node = nodes.get(f"strategy:{facts.name}", {})
    status = node.get("status", {})
    account = nodes.get("ledger", {}).get("status", {}).get("accounts", {}).get(facts.name, {})
    running = node.get("state") == "running"
    if not running:
        state = node.get("state", "missing")
        last_exit = node.get("last_exit") or {}
        why = last_exit.get("reason") or "the actor is not running"
    elif status.get("paused"):
        state, why = "paused", status["paused"]
    elif not status.get("active"):
        state, why = "inactive", status.get("inactive_reason")
    else:
        state, why = "active", None
    breaker = status.get("breaker") or {}
    return {
        "name": facts.name,
        "venue": facts.venue,
        "symbol": facts.symbol,
        "base": facts.base,
        "quote": facts.quote,
        "mode": facts.mode,
        "state": state,
        "why": why,
        "preflight_problems": status.get("preflight_problems", []),
        "breaker": plain_all(breaker) if breaker else None,
        "realized_pnl": shown(account.get("realized_pnl", status.get("realized_pnl"))),
        "fees_paid": {k: plain(v) for k, v in (account.get("fees_paid") or status.get("fees_paid") or {}).items()},
        "held": plain(status.get("held")),
        "base_free": plain(account.get("base_free", status.get("base_free"))),
        "base_reserved": plain(account.get("base_reserved")),
        "quote_free": plain(account.get("quote_free")),
        "quote_reserved": plain(account.get("quote_reserved")),
        "entry_price": shown(status.get("entry_price")),
        "dust": plain(status.get("dust")),
        "open_orders": status.get("open_orders", 0),
        "restarts": node.get("restarts", 0),
        "incarnation": node.get("incarnation", 0),
        "mailbox": node.get("mailbox"),
        **(_position_fields(facts, status) if status.get("market_type") == "swap" or facts.settle else {}),
    }


def _position_fields(facts: StrategyFacts, status: dict[str, Any]) -> dict[str, Any]:
    """A perpetual strategy's position and margin, as its core reports them (amounts in the
    settlement asset): ``held`` is the signed position, ``collateral`` its wallet share."""
    return {
        "market_type": "swap",
        "settle": facts.settle,
        "position": plain(status.get("position")),
        "leverage": plain(status.get("leverage")),
        "collateral": shown(status.get("wallet")),
        "free_collateral": shown(status.get("free_collateral")),
        "margin_used": shown(status.get("margin_used")),
        "funding_paid": shown(status.get("funding_paid")),
        "protection": status.get("protection"),
    }


def with_details(row: dict[str, Any], details: dict[str, Any]) -> dict[str, Any]:
    """A row with what the store adds: open orders listed, the last decision, the mark
    price (the close of the last candle the strategy evaluated) and the unrealized P&L of
    what it holds at that mark, against its average entry price (fees included)."""
    mark = details.get("mark")
    unrealized = None
    if mark and mark.get("price") and row["held"] is not None and row["entry_price"] is not None:
        unrealized = plain((Decimal(mark["price"]) - Decimal(row["entry_price"])) * Decimal(row["held"]))
    elif row["held"] is not None and Decimal(row["held"]) == 0:
        unrealized = "0"
    return {
        **row,
        "mark_price": plain(mark["price"]) if mark else None,
        "mark_at": mark["at"] if mark else None,
        "unrealized_pnl": unrealized,
        "orders": [plain_all(o) for o in details.get("orders", [])],
        "last_decision": details.get("last_decision"),
    }


def strategy_rows(strategies: list[StrategyFacts], nodes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [strategy_row(facts, nodes) for facts in strategies]


# -------------------------------------------------------------------- venues


def venue_rows(venues: list[str], nodes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each venue: connected, isolated (and why), reconciled, and its connection's report."""
    reconciler = nodes.get("reconciler", {}).get("status", {})
    reconciled = set(reconciler.get("venues_reconciled", []))
    last = reconciler.get("last_cycle_at", {})
    rows = []
    for name in venues:
        supervisor = nodes.get(f"venue:{name}", {})
        connection = nodes.get(f"connection:{name}", {})
        status = connection.get("status", {})
        isolated = status.get("isolated")
        if supervisor.get("state") == "isolated":
            isolated = isolated or (supervisor.get("last_exit") or {}).get("reason") or "isolated by its supervisor"
        running = connection.get("state") == "running"
        connected = running and not isolated and (status.get("mode") == "shadow" or bool(status.get("markets_loaded")))
        rows.append(
            {
                "name": name,
                "mode": status.get("mode"),
                "connected": connected,
                "isolated": isolated,
                "reconciled": name in reconciled,
                "last_reconciled_at": last.get(name),
                "connection_state": connection.get("state", "missing"),
                "restarts": connection.get("restarts", 0),
                "report": plain_all({k: v for k, v in status.items() if k not in ("mode", "isolated")}),
            }
        )
    return rows


def readiness(venues: list[dict[str, Any]]) -> tuple[bool, list[str]]:
    """Ready when every venue is reconciled and none is isolated; else the reasons."""
    problems = []
    for venue in venues:
        if venue["isolated"]:
            problems.append(f"venue {venue['name']} is isolated: {venue['isolated']}")
        elif venue["connection_state"] != "running":
            problems.append(f"venue {venue['name']}: its connection is {venue['connection_state']}")
        if not venue["reconciled"]:
            problems.append(f"venue {venue['name']} is not reconciled yet")
    return not problems, problems


# ---------------------------------------------------------------------- tree


def tree_view(node: dict[str, Any]) -> dict[str, Any]:
    """The supervision tree: each node's state, restarts within the window, incarnation,
    last exit and mailbox depth, without what actors report about themselves (a strategy's
    report is its row; the ledger's is every account, which would grow with strategies)."""
    view = {k: v for k, v in node.items() if k not in ("children", "status")}
    if "children" in node:
        view["children"] = [tree_view(child) for child in node["children"]]
    return view


def tree_health(tree: dict[str, Any]) -> dict[str, Any]:
    actors = [n for n in walk(tree) if n.get("kind") == "actor"]
    not_running = [
        {"name": n["name"], "state": n["state"], "last_exit": n.get("last_exit")}
        for n in walk(tree)
        if n is not tree and n.get("state") != "running"
    ]
    fullest = max(
        (n for n in actors if n.get("mailbox")),
        key=lambda n: n["mailbox"]["depth"] / max(n["mailbox"]["capacity"], 1),
        default=None,
    )
    return {
        "state": tree.get("state"),
        "actors": len(actors),
        "running": sum(n.get("state") == "running" for n in actors),
        "not_running": not_running[:20],
        "restarts_in_window": sum(n.get("restarts", 0) for n in walk(tree) if n is not tree),
        "fullest_mailbox": None if fullest is None else {"actor": fullest["name"], **fullest["mailbox"]},
        "messages_queued": sum(n["mailbox"]["depth"] for n in actors if n.get("mailbox")),
    }


# ------------------------------------------------------------------- summary


def summary(
    facts: dict[str, Any], tree: dict[str, Any], strategies: list[StrategyFacts], venues: list[str], at: float
) -> dict[str, Any]:
    """``/status``: counts, totals, venues and the tree's health; a few kilobytes however
    many strategies run (they are paged at ``/status/strategies``)."""
    nodes = index(tree)
    rows = strategy_rows(strategies, nodes)
    states: dict[str, int] = {}
    realized: dict[str, Decimal] = {}
    fees: dict[str, Decimal] = {}
    breakers: dict[str, int] = {}
    for row in rows:
        states[row["state"]] = states.get(row["state"], 0) + 1
        if row["breaker"]:
            state = row["breaker"].get("state", "closed")
            breakers[state] = breakers.get(state, 0) + 1
        if row["realized_pnl"] is not None:
            realized[row["quote"]] = realized.get(row["quote"], Decimal(0)) + Decimal(row["realized_pnl"])
        for currency, amount in row["fees_paid"].items():
            fees[currency] = fees.get(currency, Decimal(0)) + Decimal(amount)
    venue_list = venue_rows(venues, nodes)
    ready, problems = readiness(venue_list)
    return {
        **facts,
        "at": at,
        "ready": ready,
        "not_ready": problems,
        "strategies": {
            "total": len(rows),
            "by_state": states,
            "breakers": breakers,
            "open_orders": sum(row["open_orders"] for row in rows),
            "paused": [row["name"] for row in rows if row["state"] == "paused"][:20],
            "page": "/status/strategies?offset=0&limit=100",
        },
        "realized_pnl": {currency: plain(amount) for currency, amount in sorted(realized.items())},
        "fees_paid": {currency: plain(amount) for currency, amount in sorted(fees.items())},
        "venues": venue_list,
        "tree": tree_health(tree),
        "reconciler": plain_all(nodes.get("reconciler", {}).get("status", {})),
        # Webhooks: sent, retried, gave up, dropped, pending (the notifier's own counts).
        "notifications": plain_all(nodes.get("notifier", {}).get("status", {})),
    }
