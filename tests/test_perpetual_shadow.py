"""A perpetual strategy end to end through the real actors, in shadow mode: config, the
ledger's position book, the strategy's planner and protection, the simulated perpetuals
account, the writer and the store, on the bundled BTC/USD candles treated as a perpetual
(``BTC/USD:USD``), replayed in lockstep so every candle is decided."""

from __future__ import annotations

from decimal import Decimal
from decimal import Decimal as D
from pathlib import Path

import pytest
import trio

from exchange.candles import bundled_path

CANDLES = 600


def write_candles(tmp_path: Path, candles: int) -> Path:
    """The first ``candles`` hours of the bundled BTC/USD data."""
    lines = bundled_path("btc_usd_1h_coinbase.csv").read_text().splitlines()[: candles + 1]
    data = tmp_path / "btc.csv"
    data.write_text("\n".join(lines) + "\n")
    return data


def perp_raw(tmp_path: Path, on_sell: str = "short", protection: dict | None = None, candles: int = CANDLES) -> dict:
    data = write_candles(tmp_path, candles)
    return {
        "store": str(tmp_path / "limitline.sqlite"),
        "status": {"port": 0},
        "reconciler": {"interval_seconds": 0.5},
        "venues": [{
            "name": "perp", "kind": "simulated", "market_type": "swap", "balances": {"USD": 20000},
            "markets": [{"symbol": "BTC/USD:USD", "tick_size": 0.01, "lot_size": 0.001, "min_amount": 0.001,
                         "min_notional": 10, "maker_fee": 0.0002, "taker_fee": 0.0005, "leverage": 5}],
            "replay": {"BTC/USD:USD": {"data": str(data), "speed": 50, "lockstep": True}},
        }],
        "strategies": [{
            "name": "trend", "venue": "perp", "symbol": "BTC/USD:USD",
            "allocation": {"quote": 5000}, "sizing": {"base": 0.5},
            "buy": {"kind": "sma_cross", "fast": 5, "slow": 20, "direction": "up"},
            "sell": {"kind": "sma_cross", "fast": 5, "slow": 20, "direction": "down"},
            "on_buy": "long", "on_sell": on_sell, "limit_offset_bps": -10, "ttl_seconds": 7200,
            **({"protection": protection} if protection is not None else {}),
        }],
    }


async def run(raw: dict, evaluated: int = CANDLES - 1):
    from helpers import Watch, node

    from supervisors.app import App
    from supervisors.config import parse_config

    watch = Watch()
    app = App(parse_config(raw), echo=watch)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            await watch.until(lambda events: any(e.kind == "replay_finished" for e in events))
            await watch.until(lambda events: sum(e.kind == "evaluated" for e in events) >= evaluated)
            snapshot = app.snapshot()
            exchange = app.shadow_venues["perp"].exchange
            nursery.cancel_scope.cancel()
    return watch, snapshot, exchange, node(snapshot, "ledger")["status"], node(snapshot, "strategy:trend")["status"]


def _book_of_store(path: str):
    from actors.ledger.positions_core import PositionBook
    from store.db import load_position_journal, open_store

    connection = open_store(path, readonly=True)
    try:
        return PositionBook.from_journal(load_position_journal(connection), "USD")
    finally:
        connection.close()


async def test_a_long_short_strategy_with_protection_runs_end_to_end(tmp_path):
    raw = perp_raw(tmp_path, protection={"take_profit_pct": 3, "stop_loss_pct": 1.5})
    watch, snapshot, exchange, ledger, strategy = await run(raw)
    placed = watch.of("order_placed")
    # Positions opened both ways, and closes were reduce-only.
    opens = [e for e in placed if e.payload.get("leg") == "open"]
    assert {e.payload["side"] for e in opens} == {"buy", "sell"}
    assert all(e.payload["reduce_only"] for e in placed if e.payload.get("leg") == "close")
    # Protection rested: a take-profit limit and a stop-limit with its trigger, reduce-only.
    stops = [e for e in placed if e.payload["type"] == "stop_limit"]
    tps = [e for e in placed if e.payload.get("action") == "protect" and e.payload["type"] == "limit"]
    assert stops and tps and all(e.payload["reduce_only"] and "trigger_price" in e.payload for e in stops)
    # ... and closed positions: the exchange's trades of protective orders, and the events.
    protective = {e.client_order_id for e in stops + tps}
    assert any(t.client_order_id in protective for t in exchange.trades)
    assert watch.count("closed_by_protection") >= 1
    # Decisions carry their action.
    assert {e.payload.get("action") for e in watch.of("evaluated")} >= {"open", "flip"}
    # The ledger's books are the exchange's: size, realized P&L, fees.
    position = exchange.position("BTC/USD:USD")
    booked = ledger["positions"]["trend:BTC/USD:USD"]
    assert D(booked["size"]) == position.size
    assert D(booked["realized_pnl"]) == position.realized_pnl
    assert D(booked["fees_paid"]["USD"]) == position.fees
    assert D(strategy["position"]) == position.size
    # Funding was booked as its own entries: the wallets moved alike.
    assert D(booked["funding_paid"]) == -position.funding != 0
    assert D(ledger["collateral"]["trend"]["wallet"]) - 5000 == exchange.wallet - 20000
    # Never a market order of any kind.
    assert exchange.violations == []
    # Nothing crashed, nothing was refused by the ledger.
    assert watch.count("child_restarting") == 0 and watch.count("strategy_paused") == 0
    # The simulated account the store keeps (its changes, recorded as they happened) is
    # the account itself: shadow mode goes on from it after a restart.
    from store.access import stored_perpetual

    assert stored_perpetual(raw["store"], "perp") == exchange.snapshot()
    # The book is the fold of its journal: rebuilt from the store, it is the same.
    rebuilt = _book_of_store(raw["store"])
    assert rebuilt.snapshot()["positions"]["trend:BTC/USD:USD"] | {} == {
        **ledger["positions"]["trend:BTC/USD:USD"], "groups": rebuilt.snapshot()["positions"]["trend:BTC/USD:USD"]["groups"]}
    rebuilt.check_invariants()


def assert_books_are_the_exchanges(ledger: dict, exchange, allocation: D, wallet: D) -> None:
    position = exchange.position("BTC/USD:USD")
    booked = ledger["positions"]["trend:BTC/USD:USD"]
    assert D(booked["size"]) == position.size
    assert D(booked["realized_pnl"]) == position.realized_pnl
    assert D(booked["fees_paid"]["USD"]) == position.fees
    assert D(booked["funding_paid"]) == -position.funding
    assert D(ledger["collateral"]["trend"]["wallet"]) - allocation == exchange.wallet - wallet


async def test_a_long_only_strategy_closes_with_reduce_only_orders_and_never_goes_short(tmp_path):
    raw = perp_raw(tmp_path, on_sell="flat", candles=300)
    watch, _, exchange, ledger, _ = await run(raw, evaluated=299)
    placed = watch.of("order_placed")
    closes = [e for e in placed if e.payload["action"] == "close"]
    assert closes and all(e.payload["reduce_only"] and e.payload["side"] == "sell" for e in closes)
    assert all(e.payload["side"] == "buy" for e in placed if e.payload["action"] == "open")
    assert {e.payload.get("action") for e in watch.of("evaluated")} >= {"open", "close"}
    assert min(t.position_after for t in exchange.trades) >= 0  # never short, at any fill
    assert_books_are_the_exchanges(ledger, exchange, D(5000), D(20000))
    assert exchange.violations == []


async def test_the_status_pages_show_a_position(tmp_path):
    import httpx
    from test_web import running

    raw = perp_raw(tmp_path, protection={"take_profit_pct": 3, "stop_loss_pct": 1.5}, candles=200)
    async with running(raw) as (app, watch, client):
        await watch.until(lambda events: any(e.kind == "replay_finished" for e in events))
        await watch.until(lambda events: sum(e.kind == "evaluated" for e in events) >= 199)
        for path in ("/status", "/status/strategies", "/metrics", "/events"):
            assert (await client.get(path)).status_code == 200, path
        row = (await client.get("/status/strategies/trend")).json()
    assert isinstance(client, httpx.AsyncClient)
    assert row["held"] == "-0.5" and row["state"] == "active"
    assert Decimal(row["unrealized_pnl"]) == (Decimal(row["mark_price"]) - Decimal(row["entry_price"])) * Decimal("-0.5")


async def test_a_gapped_stop_is_escalated_with_a_crossing_reduce_only_limit(tmp_path):
    # Up through 100 (a buy: long), then the market opens far below the stop's limit.
    closes = ["95"] * 3 + ["101"] * 4 + ["89.5"] * 6
    rows = ["timestamp,open,high,low,close,volume"]
    for i, close in enumerate(closes):
        open_ = "90" if i == 7 else close  # the gap: opens at 90, beyond the stop's limit
        rows.append(f"2020-01-01T{i:02d}:00:00Z,{open_},{max(open_, close, key=float)},{min(open_, close, '89', key=float) if i == 7 else close},{close},100000")
    data = tmp_path / "gap.csv"
    data.write_text("\n".join(rows) + "\n")
    raw = perp_raw(tmp_path, protection={"take_profit_pct": 5, "stop_loss_pct": 2})
    raw["venues"][0]["replay"]["BTC/USD:USD"]["data"] = str(data)
    raw["venues"][0]["markets"][0]["min_notional"] = 1
    raw["strategies"][0]["buy"] = {"kind": "price_cross", "level": 100, "direction": "up"}
    raw["strategies"][0]["sell"] = {"kind": "price_cross", "level": 50, "direction": "down"}
    watch, _, exchange, ledger, _ = await run(raw, evaluated=len(closes) - 1)
    [escalated] = watch.of("protection_escalated")[:1]
    assert escalated.reason.startswith("gap: the stop") and "escalated with a reduce-only limit at" in escalated.reason
    [gap] = [e for e in watch.of("order_placed") if e.payload["leg"] == "escalation"][:1]
    assert gap.payload["reduce_only"] and gap.payload["type"] == "limit"
    closed = watch.of("closed_by_protection")
    assert closed and closed[-1].payload["role"] == "gap escalation"
    assert exchange.position("BTC/USD:USD").size == 0 and not exchange.open_orders() and not exchange.open_conditional_orders()
    assert_books_are_the_exchanges(ledger, exchange, D(5000), D(20000))
    assert exchange.violations == []


async def test_a_liquidation_is_classified_booked_and_pauses_the_strategy(tmp_path):
    from helpers import Watch, node

    from supervisors.app import App
    from supervisors.config import parse_config

    closes = ["95"] * 3 + ["101"] * 4 + ["96"] * 4  # a long at 101, isolated at 50x: gone below ~99
    rows = ["timestamp,open,high,low,close,volume"]
    rows += [f"2020-01-01T{i:02d}:00:00Z,{c},{c},{c},{c},100000" for i, c in enumerate(closes)]
    data = tmp_path / "crash.csv"
    data.write_text("\n".join(rows) + "\n")
    raw = perp_raw(tmp_path)
    raw["venues"][0]["replay"]["BTC/USD:USD"]["data"] = str(data)
    raw["venues"][0]["markets"][0].update(leverage=50, margin_mode="isolated", min_notional=1)
    raw["strategies"][0]["buy"] = {"kind": "price_cross", "level": 100, "direction": "up"}
    raw["strategies"][0]["sell"] = {"kind": "price_cross", "level": 50, "direction": "down"}
    watch = Watch()
    app = App(parse_config(raw), echo=watch)
    exchange = app.shadow_venues["perp"].exchange
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            await watch.until(lambda events: any(e.payload.get("class") == "liquidated" for e in events))
            await watch.until(lambda events: any(e.kind == "strategy_paused" for e in events))
            # The insurance fund's clearance of what the liquidation left of the margin.
            await watch.until(lambda events: any(str(e.payload.get("key", "")).startswith("insurance:") for e in events))
            await watch.until(lambda _: D(node(app.snapshot(), "ledger")["status"]["collateral"]["trend"]["wallet"]) - 5000
                              == exchange.wallet - 20000)
            snapshot = app.snapshot()
            nursery.cancel_scope.cancel()
    assert exchange.liquidation_orders and exchange.position("BTC/USD:USD").size == 0
    [clear] = [i for i in exchange.income if i.income_type == "INSURANCE_CLEAR"]
    # The market gapped below the liquidation price: the forced order's loss is beyond the
    # isolated margin (0.5 x 101 / 50), and the fund covers the rest: the margin is all it costs.
    [forced] = [t for t in exchange.trades if t.liquidation]
    assert clear.amount == -(D("0.5") * 101 / 50 + forced.realized_pnl) > 0
    [paused] = watch.of("strategy_paused")
    assert "was liquidated by the exchange" in paused.reason
    ledger = node(snapshot, "ledger")["status"]
    booked = ledger["positions"]["trend:BTC/USD:USD"]
    position = exchange.position("BTC/USD:USD")
    assert D(booked["size"]) == 0 and D(booked["realized_pnl"]) == position.realized_pnl
    assert node(snapshot, "strategy:trend")["status"]["paused"] is not None
    # The ledger agrees with the engine: the whole isolated margin is gone, no more.
    assert_books_are_the_exchanges(ledger, exchange, D(5000), D(20000))
    [difference] = [e for e in watch.events if str(e.payload.get("key", "")).startswith("insurance:")]
    assert difference.payload["class"] == "liquidated" and "insurance fund cleared" in difference.reason


async def test_a_restart_keeps_the_position_and_adopts_its_protection(tmp_path):
    protection = {"take_profit_pct": 3, "stop_loss_pct": 1.5}
    raw = perp_raw(tmp_path, protection=protection, candles=200)
    _, _, exchange, ledger, strategy = await run(raw, evaluated=199)
    # It stops holding a short with its protection resting on the exchange.
    assert D(strategy["position"]) == D("-0.5") and strategy["protection"] == {"take_profit": "0.5", "stop_loss": "0.5"}
    assert len(exchange.open_orders()) == 1 and len(exchange.open_conditional_orders()) == 1
    held = ledger["positions"]["trend:BTC/USD:USD"]

    write_candles(tmp_path, 400)  # the market goes on; the replay continues where it stopped
    watch, _, exchange, ledger, strategy = await run(raw, evaluated=199)
    # The ledger rebuilt the position from its journal, and the strategy held it at once.
    assert held["size"] == "-0.5" and watch.of("evaluated")[0].payload["position"] == "-0.5"
    kinds = [(e.kind, e.payload.get("action")) for e in watch.events]
    first_fill = kinds.index(("fill", None)) if ("fill", None) in kinds else len(kinds)
    # The protection resting was adopted: nothing protective was placed before a fill.
    assert ("order_placed", "protect") not in kinds[:first_fill]
    assert first_fill < len(kinds) and watch.count("closed_by_protection") >= 1
    assert_books_are_the_exchanges(ledger, exchange, D(5000), D(20000))
    assert len(exchange.open_conditional_orders()) <= 1 and len(exchange.open_orders()) <= 2
    assert exchange.violations == []
    assert watch.count("child_restarting") == 0 and watch.count("strategy_paused") == 0


async def test_an_operator_closing_the_position_is_classified_and_booked(tmp_path):
    from helpers import Watch, node

    from supervisors.app import App
    from supervisors.config import parse_config

    raw = perp_raw(tmp_path, protection={"take_profit_pct": 3, "stop_loss_pct": 1.5}, candles=200)
    watch = Watch()
    app = App(parse_config(raw), echo=watch)
    exchange = app.shadow_venues["perp"].exchange
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            await watch.until(lambda events: any(e.kind == "replay_finished" for e in events))
            await watch.until(lambda events: sum(e.kind == "evaluated" for e in events) >= 199)
            assert exchange.position("BTC/USD:USD").size == D("-0.5")
            # An operator closes the short by hand, outside limitline.
            exchange.operator_reduce("BTC/USD:USD", None, 0.0)
            await watch.until(lambda events: any(e.payload.get("class") == "position_changed_outside" for e in events))
            await watch.until(lambda _: not exchange.open_orders() and not exchange.open_conditional_orders())
            await watch.until(lambda _: node(app.snapshot(), "ledger")["status"]["positions"]["trend:BTC/USD:USD"]["size"] in ("0", "0.0"))
            snapshot = app.snapshot()
            nursery.cancel_scope.cancel()
    [difference] = [e for e in watch.events if e.payload.get("class") == "position_changed_outside"]
    assert "trades outside limitline (buy 0.5 @" in difference.reason and "adopted" in difference.reason
    ledger = node(snapshot, "ledger")["status"]
    assert_books_are_the_exchanges(ledger, exchange, D(5000), D(20000))
    # The protection of a position that is gone was cancelled; the strategy carries on.
    assert watch.count("strategy_paused") == 0
    assert node(snapshot, "strategy:trend")["status"]["position"] in ("0", "0.0")


async def test_an_open_beyond_the_collateral_is_denied_naming_the_margin(tmp_path):
    raw = perp_raw(tmp_path, candles=120)
    # 0.5 BTC at the first close, 2,509.17, and leverage 5 needs 251.54 with the worst fee:
    # pre-flight passes; an open at a higher price needs more and is denied by the ledger.
    raw["strategies"][0]["allocation"] = {"quote": 252}
    watch, _, exchange, ledger, _ = await run(raw, evaluated=119)
    denied = [e for e in watch.of("blocked") if e.client_order_id]
    assert denied and all(e.reason.startswith("insufficient margin: needs ") and "/ leverage 5" in e.reason for e in denied)
    denied_ids = {e.client_order_id for e in denied}
    assert not any(o.client_order_id in denied_ids for o in exchange.orders.values())  # none reached the exchange
    assert "preflight_failed" not in {e.kind for e in watch.events}


def test_preflight_refuses_a_perpetual_size_whose_margin_exceeds_the_allocation(tmp_path):
    from supervisors.app import preflight_all
    from supervisors.config import parse_config

    raw = perp_raw(tmp_path, candles=120)
    raw["strategies"][0]["allocation"] = {"quote": 100}  # 0.5 BTC at ~2,500 and leverage 5 needs ~250
    [problem] = preflight_all(parse_config(raw))["trend"]
    assert problem.startswith("sizing.base: one open of 0.5 BTC at the last price ") and "more than allocation.quote 100" in problem


@pytest.mark.parametrize("bad, problem", [
    ({"leverage": None}, "venues[0].markets[0].leverage: a swap market needs its leverage"),
    ({"symbol": "BTC/USD"}, "venues[0].markets[0].symbol: a linear perpetual is named BASE/QUOTE:SETTLE"),
    ({"margin_mode": "both"}, "venues[0].markets[0].margin_mode: must be cross or isolated"),
])
def test_a_swap_market_is_checked_field_by_field(tmp_path, bad, problem):
    from supervisors.config import ConfigError, parse_config

    raw = perp_raw(tmp_path)
    raw["venues"][0]["markets"][0].update(bad)
    if "symbol" in bad:
        raw["venues"][0]["replay"] = {"BTC/USD": raw["venues"][0]["replay"]["BTC/USD:USD"]}
        raw["strategies"][0]["symbol"] = "BTC/USD"
    with pytest.raises(ConfigError) as error:
        parse_config(raw)
    assert any(p.startswith(problem) for p in error.value.problems), error.value.problems


def test_two_strategies_on_one_symbol_of_a_one_way_account_are_refused_naming_both(tmp_path):
    from supervisors.config import ConfigError, parse_config

    raw = perp_raw(tmp_path)
    raw["strategies"].append(dict(raw["strategies"][0], name="other"))
    with pytest.raises(ConfigError) as error:
        parse_config(raw)
    assert ("strategies[1].symbol: strategies trend and other both trade BTC/USD:USD on venue perp, a one-way "
            "account with one position per symbol; give each its own symbol or venue") in error.value.problems


def test_a_swap_strategy_says_its_posture(tmp_path):
    from supervisors.config import ConfigError, parse_config

    raw = perp_raw(tmp_path)
    del raw["strategies"][0]["on_sell"]
    raw["strategies"][0]["protection"] = {"take_profit_pct": 150}
    with pytest.raises(ConfigError) as error:
        parse_config(raw)
    problems = error.value.problems
    assert any(p.startswith("strategies[0].on_sell: a strategy on swap venue 'perp' says which position a sell "
                            "signal asks for: long, short or flat") for p in problems), problems
    assert any(p.startswith("strategies[0].protection.take_profit_pct: must be above 0 and below 100") for p in problems)
