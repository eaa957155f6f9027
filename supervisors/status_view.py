"""``limitline status``: a terminal view of a running process, read from its HTTP endpoints.

It reads ``/status`` (the summary) and one page of ``/status/strategies`` (or one strategy
at ``/status/strategies/NAME``) from the process's status server and prints them as `rich`
tables: the totals, the strategies (state and why, mode, breaker, realized and unrealized
P&L, holdings, open orders, last decision), their open orders, breakers that are not
closed, and the venues (connected, isolated, last reconciliation). Two requests whatever
the number of strategies: a thousand print as the summary and the first page, with a hint
naming the next page's options.

Reading needs no token on loopback; elsewhere it sends ``Authorization: Bearer`` with
``LIMITLINE_READ_TOKEN`` (or ``LIMITLINE_OPERATOR_TOKEN``) from the environment (see
:mod:`supervisors.web.access`). Errors are :class:`StatusUnavailable` with a message for a
person; the token is never part of one.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from decimal import Decimal
from typing import Any

import attrs
from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from supervisors.display import amount, money, per_currency, utc
from supervisors.web.access import OPERATOR_TOKEN_ENV, READ_TOKEN_ENV

#: Strategies on a page unless ``--limit`` says otherwise: a screenful.
DEFAULT_LIMIT = 20
#: The server's own cap on a page (``supervisors.web.server.MAX_PAGE``).
MAX_LIMIT = 500
TIMEOUT_SECONDS = 10.0


class StatusUnavailable(Exception):
    """The process could not be read: nothing answers (not running), a token is missing or
    wrong, or it answered an error. The message says which, and what to do."""


def default_url(host: str, port: int) -> str:
    """The status server's URL from the config's ``status.host`` and ``status.port``; a
    server listening on every interface is reached on loopback."""
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address in a URL
    return f"http://{host}:{port}"


@attrs.frozen
class StatusClient:
    """GETs JSON from a status server. ``token``: sent as ``Authorization: Bearer``."""

    url: str
    token: str | None = None
    timeout: float = TIMEOUT_SECONDS

    @classmethod
    def from_env(cls, url: str) -> "StatusClient":
        return cls(url.rstrip("/"), os.environ.get(READ_TOKEN_ENV) or os.environ.get(OPERATOR_TOKEN_ENV) or None)

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """The JSON at ``path``; raises :class:`StatusUnavailable`."""
        query = f"?{urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})}" if params else ""
        request = urllib.request.Request(f"{self.url}{path}{query}", headers={"Accept": "application/json"})
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise StatusUnavailable(self._http_problem(path, error)) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            reason = getattr(error, "reason", error)
            raise StatusUnavailable(
                f"nothing answers at {self.url} ({reason}): is `limitline run` running? Its status server's "
                f"address is status.host and status.port in its config (give the same -c, or --url)"
            ) from None
        except ValueError:
            raise StatusUnavailable(f"{self.url}{path} did not answer JSON: is it limitline's status server?") from None

    def _http_problem(self, path: str, error: urllib.error.HTTPError) -> str:
        try:
            detail = json.loads(error.read()).get("error") or ""
        except (ValueError, AttributeError):
            detail = ""
        if error.code == 401:
            sent = "the token sent was refused" if self.token else "no token was sent"
            return (f"{self.url} needs a read token ({sent}): set {READ_TOKEN_ENV} (or {OPERATOR_TOKEN_ENV}) "
                    f"to the running process's value")
        return f"{self.url}{path} answered {error.code}: {detail or error.reason}"


@attrs.frozen
class StatusView:
    """What one refresh read: the summary and a page of strategies (or one strategy)."""

    summary: dict[str, Any]
    strategies: list[dict[str, Any]]
    total: int
    offset: int
    limit: int
    state: str | None = None
    one: bool = False


def read_view(client: StatusClient, *, offset: int = 0, limit: int = DEFAULT_LIMIT, state: str | None = None,
              strategy: str | None = None) -> StatusView:
    """Two requests: ``/status`` and a page of ``/status/strategies`` (or ``/NAME``)."""
    summary = client.get("/status")
    if strategy is not None:
        row = client.get(f"/status/strategies/{urllib.parse.quote(strategy, safe='')}")
        return StatusView(summary, [row], 1, 0, 1, one=True)
    page = client.get("/status/strategies", {"offset": offset, "limit": limit, "state": state})
    return StatusView(summary, page["strategies"], page["total"], page["offset"], page["limit"], state)


# ----------------------------------------------------------------- formatting


def _signed(value: Any, currency: str) -> Text:
    shown = money(value, currency)
    if value is None:
        return Text(shown, style="dim")
    number = Decimal(str(value))
    return Text(shown, style="green" if number > 0 else "red" if number < 0 else "")


STATE_STYLES = {"active": "green", "paused": "yellow", "inactive": "red"}
BREAKER_STYLES = {"closed": "green", "half_open": "yellow", "open": "red"}


# -------------------------------------------------------------------- tables


def totals_table(summary: dict[str, Any]) -> Table:
    strategies = summary.get("strategies", {})
    tree = summary.get("tree", {})
    table = Table(title="Totals", box=box.SIMPLE_HEAD, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    mode = summary.get("mode", "-")
    if summary.get("armed_live"):
        mode += " (armed: REAL ORDERS)"
    table.add_row("mode", mode)
    by_state = ", ".join(f"{state} {count}" for state, count in sorted(strategies.get("by_state", {}).items()))
    table.add_row("strategies", f"{strategies.get('total', 0)} ({by_state or 'none'})")
    if strategies.get("paused"):
        table.add_row("paused", ", ".join(strategies["paused"]))
    table.add_row("open orders", str(strategies.get("open_orders", 0)))
    table.add_row("realized P&L", per_currency(summary.get("realized_pnl", {})))
    table.add_row("fees paid", per_currency(summary.get("fees_paid", {})))
    table.add_row("ready", "yes" if summary.get("ready") else "no: " + "; ".join(summary.get("not_ready", [])))
    table.add_row("actors", f"{tree.get('running', 0)} of {tree.get('actors', 0)} running, "
                            f"{tree.get('restarts_in_window', 0)} restarts in the window, "
                            f"{tree.get('messages_queued', 0)} messages queued")
    table.add_row("store", str(summary.get("store", "-")))
    table.add_row("read at", utc(summary.get("at")))
    return table


def strategies_table(view: StatusView) -> Table:
    if view.one:
        title = f"Strategy {view.strategies[0]['name']}" if view.strategies else "Strategy"
    else:
        last = view.offset + len(view.strategies)
        which = f" {view.state}" if view.state else ""
        title = f"Strategies{which} {view.offset + 1 if view.strategies else 0}-{last} of {view.total}"
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("strategy", overflow="fold")
    table.add_column("state, breaker", overflow="fold")
    table.add_column("realized P&L", justify="right")
    table.add_column("unrealized P&L", justify="right")
    table.add_column("holdings", justify="right")
    table.add_column("open orders", justify="right")
    for row in view.strategies:
        name = Text(row["name"], style="bold")
        name.append(f"\n{row.get('symbol', '-')} on {row.get('venue', '-')}\n{row.get('mode', '-')}", style="dim")
        state = Text(row["state"], style=STATE_STYLES.get(row["state"], "red"))
        if row.get("why"):
            state.append(f": {row['why']}", style="dim")
        breaker = (row.get("breaker") or {}).get("state", "-")
        state.append("\nbreaker ")
        state.append(breaker, style=BREAKER_STYLES.get(breaker, ""))
        base, quote = row.get("base", ""), row.get("quote", "")
        if row.get("market_type") == "swap":
            holdings = (f"{amount(row.get('held'))} {base} at {amount(row.get('entry_price'))} x{row.get('leverage') or '-'}\n"
                        f"{money(row.get('free_collateral'), quote)} free, {money(row.get('margin_used'), quote)} margin")
        else:
            holdings = f"{amount(row.get('held'))} {base}\n{money(row.get('quote_free'), quote)} free"
        if row.get("dust"):
            holdings += f"\n(dust {amount(row['dust'])} {base})"
        unrealized = _signed(row.get("unrealized_pnl"), quote)
        if row.get("mark_price"):
            unrealized.append(f"\nat {amount(row['mark_price'])}", style="dim")
        table.add_row(name, state, _signed(row.get("realized_pnl"), quote), unrealized, holdings,
                      str(row.get("open_orders", 0)))
    return table


def decisions_table(view: StatusView) -> Table:
    """Each strategy's last decision on a candle: evaluated (which rule fired), blocked
    (with the reason) or an order placed."""
    table = Table(title="Last decisions", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("strategy")
    table.add_column("at (UTC)")
    table.add_column("decision", overflow="fold")
    for row in view.strategies:
        decision = row.get("last_decision") or {}
        at = decision.get("at")
        table.add_row(row["name"], utc(at).removesuffix(" UTC") if at else "-", decision.get("summary") or "none yet")
    return table


def orders_table(view: StatusView) -> RenderableType:
    """The open orders of the strategies shown (from the order book of record)."""
    rows = [(row, order) for row in view.strategies for order in row.get("orders", [])]
    if not rows:
        return Text("Open orders of these strategies: none.\n")
    table = Table(title="Open orders of these strategies", box=box.SIMPLE_HEAD, title_justify="left")
    for column in ("strategy", "client order id", "side", "price", "filled / amount", "state", "rule, placed (UTC)"):
        table.add_column(column, justify="right" if column in ("price", "filled / amount") else "left", overflow="fold")
    for row, order in rows:
        placed = utc(order.get("created_at")).removesuffix(" UTC") if order.get("created_at") else "-"
        table.add_row(row["name"], order.get("client_order_id", "-"), order.get("side", "-"),
                      f"{amount(order.get('price'))} {row.get('quote', '')}",
                      f"{amount(order.get('filled'))} / {amount(order.get('amount'))} {row.get('base', '')}",
                      order.get("state", "-"), f"{order.get('rule') or '-'}\n{placed}")
    return table


def breakers_table(view: StatusView) -> RenderableType:
    """Every breaker of the strategies shown that is not closed, with its failures and
    cooldown; the counts of all strategies' breakers in the title."""
    counts = ", ".join(f"{state} {n}" for state, n in sorted(view.summary.get("strategies", {}).get("breakers", {}).items()))
    rows = [(row, row["breaker"]) for row in view.strategies
            if row.get("breaker") and row["breaker"].get("state", "closed") != "closed"]
    if not rows:
        return Text(f"Breakers: none open among these strategies (all strategies: {counts or 'none'}).\n")
    table = Table(title=f"Breakers not closed (all strategies: {counts})", box=box.SIMPLE_HEAD, title_justify="left")
    for column in ("strategy", "state", "failures in a row", "open until", "cooldown", "last failure"):
        table.add_column(column, overflow="fold")
    for row, breaker in rows:
        cooldown = breaker.get("cooldown_seconds")
        table.add_row(row["name"], Text(breaker.get("state", "-"), style=BREAKER_STYLES.get(breaker.get("state"), "")),
                      str(breaker.get("consecutive_failures", "-")), utc(breaker.get("open_until")),
                      f"{cooldown:g} s" if isinstance(cooldown, (int, float)) else "-",
                      str(breaker.get("last_failure") or "-"))
    return table


def positions_table(view: StatusView) -> RenderableType:
    """Perpetual positions (size, entry, mark, unrealized P&L, margin, protection). The
    position cores exist (``actors/ledger/positions_core.py``) but no actor reports a
    position yet; when a strategy row carries ``positions`` (a list of dicts with
    ``symbol``, ``size``, ``entry_price``, ``mark_price``, ``unrealized_pnl``, ``margin``
    and ``settle``), they are shown here."""
    rows = [(row["name"], position) for row in view.strategies for position in row.get("positions") or []]
    if not rows:
        return Text("Positions (perpetuals): not wired yet; spot holdings are in the strategies table.\n",
                    style="dim")
    table = Table(title="Positions", box=box.SIMPLE_HEAD, title_justify="left")
    for column in ("strategy", "symbol", "size", "entry", "mark", "unrealized P&L", "margin"):
        table.add_column(column, justify="left" if column in ("strategy", "symbol") else "right")
    for name, position in rows:
        settle = position.get("settle", "")
        table.add_row(name, position.get("symbol", "-"), amount(position.get("size")),
                      amount(position.get("entry_price")), amount(position.get("mark_price")),
                      _signed(position.get("unrealized_pnl"), settle), money(position.get("margin"), settle))
    return table


def venues_table(summary: dict[str, Any]) -> Table:
    table = Table(title="Venues", box=box.SIMPLE_HEAD, title_justify="left")
    for column in ("venue", "mode", "connected", "isolated", "reconciled", "last reconciliation", "restarts"):
        table.add_column(column, overflow="fold")
    for venue in summary.get("venues", []):
        table.add_row(
            venue["name"], venue.get("mode") or "-",
            Text("yes", style="green") if venue.get("connected") else Text("no", style="red"),
            Text(str(venue["isolated"]), style="red") if venue.get("isolated") else Text("no"),
            "yes" if venue.get("reconciled") else Text("not yet", style="yellow"),
            utc(venue.get("last_reconciled_at")), str(venue.get("restarts", 0)),
        )
    return table


def paging_hint(view: StatusView) -> Text | None:
    """What to type for the next page, when there is more than this page."""
    if view.one or view.offset + len(view.strategies) >= view.total:
        return None
    following = view.offset + view.limit
    state = f" --state {view.state}" if view.state else ""
    more = view.total - following
    return Text(f"{more} more strateg{'y' if more == 1 else 'ies'}: `limitline status --offset {following} "
                f"--limit {view.limit}{state}`; or --state paused|inactive|active, or --strategy NAME for one.\n",
                style="bold")


def render(view: StatusView) -> Group:
    """Everything one refresh shows, in reading order."""
    parts: list[RenderableType] = [totals_table(view.summary), strategies_table(view)]
    hint = paging_hint(view)
    if hint is not None:
        parts.append(hint)
    parts += [decisions_table(view), orders_table(view), breakers_table(view), positions_table(view), venues_table(view.summary)]
    return Group(*parts)


def show(client: StatusClient, console: Console, *, watch: float | None = None, refreshes: int | None = None,
         **page: Any) -> None:
    """Print the view once, or (``watch`` seconds) redraw it until Ctrl-C (or ``refreshes``
    times in all); raises :class:`StatusUnavailable` when the process cannot be read (at
    once, or when it stops during a watch). On a terminal the view is redrawn in place;
    otherwise (a pipe, a file) each refresh is printed after the last, with its time."""
    if watch is None:
        console.print(render(read_view(client, **page)))
        return
    from rich.live import Live

    shown = 1
    if not console.is_terminal:
        console.print(render(read_view(client, **page)))
        while refreshes is None or shown < refreshes:
            time.sleep(watch)  # the operator's refresh interval
            console.rule()
            console.print(render(read_view(client, **page)))
            shown += 1
        return
    with Live(render(read_view(client, **page)), console=console, auto_refresh=False) as live:
        while refreshes is None or shown < refreshes:
            time.sleep(watch)  # the operator's refresh interval
            live.update(render(read_view(client, **page)), refresh=True)
            shown += 1
