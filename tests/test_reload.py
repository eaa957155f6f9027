"""Editing the config of a running process: added strategies trade, changed parameters take
effect, a bad edit changes nothing and says why, and an edit never arms live trading."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import trio
import yaml
from helpers import Watch, node

from supervisors.app import App
from supervisors.config import ConfigError, parse_config
from supervisors.reload import ReloadPlan, plan_reload
from supervisors.watch import watch_config

#: Buys on every dip of the flat market, 5 % below a close it never leaves: its order rests.
RESTER = {"name": "rester", "venue": "flat", "symbol": "BTC/USD", "allocation": {"quote": 1500}, "sizing": {"quote": 500},
          "buy": {"kind": "change", "percent": -0.1, "lookback": 1}, "limit_offset_bps": 500,
          "ttl_seconds": 2592000, "max_open_orders": 1}


def flat_venue(tmp_path: Path) -> dict:
    """A simulated venue whose price only ever goes 100, 99.8, 100, ...: an order 5 % below never fills."""
    rows = ["timestamp,open,high,low,close,volume"]
    start = datetime(2020, 1, 1, tzinfo=timezone.utc)
    rows += [f"{(start + timedelta(hours=i)).isoformat().replace('+00:00', 'Z')},{c},{c},{c},{c},1000000"
             for i, c in enumerate(["100", "99.8"] * 2000)]
    data = tmp_path / "flat.csv"
    data.write_text("\n".join(rows) + "\n")
    market = {"symbol": "BTC/USD", "tick_size": 0.01, "lot_size": 0.00001, "min_amount": 0.0001, "min_notional": 10}
    return {"name": "flat", "kind": "simulated", "balances": {"USD": 5000}, "markets": [market],
            "replay": {"BTC/USD": {"data": str(data), "speed": 10}}}
#: Buys on a small dip, at the close.
DIPPER = {"name": "dip-2", "venue": "sim", "symbol": "BTC/USD", "allocation": {"quote": 2000}, "sizing": {"quote": 200},
          "buy": {"kind": "change", "percent": -0.3, "lookback": 1}, "limit_offset_bps": -10, "ttl_seconds": 7200,
          "max_open_orders": 1}


def write(path: Path, raw: dict) -> None:
    # Written whole then renamed, as an editor saves: the reader never sees half a file.
    part = path.with_suffix(".part")
    part.write_text(yaml.safe_dump(raw))
    part.replace(path)


def placed(watch: Watch, strategy: str) -> list:
    return [e for e in watch.events if e.kind == "order_placed" and e.strategy == strategy]


async def recorded(watch: Watch, kind: str):
    """The newest ``kind`` event once the writer has recorded one more than before."""
    await watch.until(lambda events: len(watch.of(kind)) > recorded.seen.get(kind, 0))
    recorded.seen[kind] = len(watch.of(kind))
    return watch.of(kind)[-1]


recorded.seen = {}


def notional(event) -> Decimal:
    return Decimal(event.payload["price"]) * Decimal(event.payload["amount"])


async def test_edits_of_a_running_process_add_change_refuse_and_never_arm_live(fast_raw, tmp_path):
    fast_raw["venues"].append(flat_venue(tmp_path))
    path = tmp_path / "config.yaml"
    write(path, fast_raw)
    watch = Watch()
    app = App(parse_config(fast_raw), echo=watch, config_path=path)
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            await watch.until(lambda _: len(placed(watch, "sma-cross")) >= 1)
            assert placed(watch, "sma-cross")[0].payload["side"] == "buy"
            assert notional(placed(watch, "sma-cross")[0]) > 900  # sizing.quote 1000

            # 1. Added and changed in one edit: the new strategy trades, the new size is used.
            raw = copy.deepcopy(fast_raw)
            raw["strategies"].append(DIPPER)
            raw["strategies"][0]["sizing"] = {"quote": 300}
            write(path, raw)
            outcome = await app.reload("test")
            assert outcome["outcome"] == "applied", outcome
            assert outcome["summary"] == "added dip-2; changed sma-cross (sizing)"
            assert app.config_problems == []
            applied = await recorded(watch, "config_applied")
            assert applied.payload["added"] == ["dip-2"] and applied.payload["changed"] == {"sma-cross": ["sizing"]}
            before = len(placed(watch, "sma-cross"))
            await watch.until(lambda _: placed(watch, "dip-2") and len(placed(watch, "sma-cross")) > before)
            await watch.until(lambda _: any(e.payload["side"] == "buy" for e in placed(watch, "sma-cross")[before:]))
            assert all(notional(e) <= 300 for e in placed(watch, "sma-cross")[before:] if e.payload["side"] == "buy")
            tree = app.snapshot()
            assert node(tree, "strategy:dip-2")["state"] == "running"
            assert node(tree, "strategy:sma-cross")["incarnation"] == 2  # restarted with its new settings
            assert node(tree, "strategy:dip-buyer")["incarnation"] == 1  # its neighbour untouched
            assert node(tree, "connection:sim")["incarnation"] == 1
            ledger = node(tree, "ledger")["status"]["accounts"]
            assert Decimal(ledger["dip-2"]["quote_free"]) + Decimal(ledger["dip-2"]["quote_reserved"]) <= 2000
            # The HTTP endpoints list (and may pause) exactly what runs now.
            assert {f.name for f in app.web.strategies} == {"sma-cross", "dip-buyer", "dip-2"}
            running = raw

            # An addition the account cannot cover is refused before anything is applied
            # (applied, its journaled allocation would fail every sibling's next pre-flight).
            greedy = copy.deepcopy(running)
            greedy["strategies"].append({**DIPPER, "name": "dip-3", "allocation": {"quote": 15000}})
            write(path, greedy)
            outcome = await app.reload("test")
            assert outcome["outcome"] == "rejected", outcome
            [problem] = app.config_problems
            assert problem.startswith("strategies: allocations on sim would exceed the account balance: 33000 USD "
                                      "allocated to all strategies, balance ")  # what the account holds now
            assert problem.endswith(" USD; lower the new strategy's allocation")
            assert (await recorded(watch, "config_rejected")).payload["problems"] == [problem]
            assert "dip-3" not in node(app.snapshot(), "ledger")["status"]["accounts"]

            # 2. A bad edit: every problem reported, nothing changed, trading goes on.
            bad = copy.deepcopy(running)
            bad["strategies"][0]["sizng"] = {"quote": 5}
            bad["strategies"][1]["max_open_orders"] = "many"
            write(path, bad)
            outcome = await app.reload("test")
            assert outcome["outcome"] == "rejected"
            assert any(p.startswith("strategies[0].sizng: unknown field") for p in app.config_problems), app.config_problems
            assert any(p.startswith("strategies[1].max_open_orders") for p in app.config_problems), app.config_problems
            rejected = await recorded(watch, "config_rejected")
            assert rejected.payload["problems"] == app.config_problems
            assert "nothing changed" in rejected.reason
            assert app.web.facts["config_reload"]["problems"] == app.config_problems  # /status says why too

            # Settings read at the start only: each refused with what it needs.
            restart = copy.deepcopy(running)
            restart["status"]["port"] = 1
            restart["venues"][0]["balances"]["USD"] = 1
            restart["strategies"][1]["allocation"]["quote"] = 9000
            write(path, restart)
            outcome = await app.reload("test")
            assert outcome["outcome"] == "rejected"
            assert [p.split(":")[0] for p in app.config_problems] == ["status", "venues[0]", "strategies[1].allocation"]
            assert app.config_problems[0].startswith("status: changed from {host: 127.0.0.1, port: 0} to {host: 127.0.0.1, port: 1}")
            assert "restart limitline" in app.config_problems[0] and "(balances)" in app.config_problems[1]
            assert "`limitline run --fresh`" in app.config_problems[2]

            # 3. An edit to mode: live is refused: live is armed only at a start with --live.
            live = copy.deepcopy(running)
            live["strategies"][0]["mode"] = "live"
            write(path, live)
            outcome = await app.reload("test")
            assert outcome["outcome"] == "rejected"
            assert any(p.startswith("strategies[0].mode:") for p in app.config_problems), app.config_problems
            assert node(app.snapshot(), "strategy:sma-cross")["status"]["mode"] == "shadow"
            count = len(placed(watch, "sma-cross"))
            await watch.until(lambda _: len(placed(watch, "sma-cross")) > count)  # still trading, in shadow mode
            tree = app.snapshot()
            assert node(tree, "strategy:sma-cross")["incarnation"] == 2 and node(tree, "strategy:dip-2")["incarnation"] == 1

            # 4. Removal: refused while the strategy has an open order; applied once it has none.
            resting = copy.deepcopy(running)
            resting["strategies"].append(RESTER)
            write(path, resting)
            assert (await app.reload("test"))["outcome"] == "applied"
            await watch.until(lambda _: placed(watch, "rester"))
            write(path, running)
            outcome = await app.reload("test")
            assert outcome["outcome"] == "rejected", outcome
            assert "rester cannot be removed while it has 1 open order(s)" in app.config_problems[0]
            assert node(app.snapshot(), "strategy:rester")["status"]["active"] is True

            without_dipper = copy.deepcopy(running)
            without_dipper["strategies"] = [s for s in running["strategies"] if s["name"] != "dip-2"] + [RESTER]
            write(path, without_dipper)
            await watch.until(lambda _: not node(app.snapshot(), "strategy:dip-2")["status"]["open_orders"])
            outcome = await app.reload("test")
            if outcome["outcome"] == "rejected":  # it placed another order meanwhile: the rule held
                assert "dip-2 cannot be removed" in app.config_problems[0]
            else:
                retired = node(app.snapshot(), "strategy:dip-2")
                assert retired["status"]["removed"] is True and retired["status"]["inactive_reason"] == "removed from the config"
                count = len(placed(watch, "dip-2"))
                others = len(placed(watch, "sma-cross"))
                await watch.until(lambda _: len(placed(watch, "sma-cross")) > others)
                assert len(placed(watch, "dip-2")) == count  # removed: it decides nothing more
            nursery.cancel_scope.cancel()
    # The restart read what its last incarnation had recorded: it never chased an order
    # the exchange had already ended.
    assert watch.count("cancel_failed", "sma-cross") == 0
    assert watch.count("strategy_reconfigured", "sma-cross") == 1


def ccxt_raw(tmp_path: Path) -> dict:
    return {
        "store": str(tmp_path / "s.sqlite"),
        "venues": [{"name": "binance", "kind": "ccxt", "exchange": "binance", "api_key_env": "K", "secret_env": "S"}],
        "strategies": [{"name": "a", "venue": "binance", "symbol": "BTC/USDT", "mode": "shadow",
                        "allocation": {"quote": 1000}, "sizing": {"quote": 100},
                        "buy": {"kind": "change", "percent": -1, "lookback": 1}}],
    }


def test_an_edit_never_arms_live_trading_even_in_a_process_started_with_live(tmp_path):
    raw = ccxt_raw(tmp_path)
    running = parse_config(raw, live=True)
    edited = copy.deepcopy(raw)
    edited["strategies"][0]["mode"] = "live"
    problems = plan_reload(running, parse_config(edited, live=True))
    assert problems == [
        "strategies[0].mode: changed from shadow to live; an edit never changes a strategy's mode (and never arms "
        "live trading): it takes effect only at a start (live with `limitline run --live`)"
    ]
    # A live strategy added by an edit is refused the same way.
    added = copy.deepcopy(raw)
    added["strategies"].append({**raw["strategies"][0], "name": "b", "mode": "live"})
    problems = plan_reload(running, parse_config(added, live=True))
    assert problems[0].startswith("strategies[1].mode: b is added as live; an edit never arms live trading")
    # Without --live, the loader itself refuses it (the reload reads the file as the start did).
    with pytest.raises(ConfigError, match="started without --live"):
        parse_config(edited, live=False)


def test_the_plan_names_what_it_changes_and_refuses_what_needs_a_restart(tmp_path, fast_raw):
    running = parse_config(fast_raw)
    edited = copy.deepcopy(fast_raw)
    edited["strategies"][1]["ttl_seconds"] = 3600
    edited["strategies"][1]["limit_offset_bps"] = 2
    edited["strategies"].append(DIPPER)
    del edited["strategies"][0]
    plan = plan_reload(running, parse_config(edited))
    assert isinstance(plan, ReloadPlan)
    assert [s.name for s in plan.added] == ["dip-2"] and [s.name for s in plan.removed] == ["sma-cross"]
    assert plan.summary() == "added dip-2; removed sma-cross; changed dip-buyer (limit_offset_bps, ttl_seconds)"
    assert plan_reload(running, running).empty

    moved = copy.deepcopy(fast_raw)
    moved["store"] = str(tmp_path / "other.sqlite")
    moved["strategies"][0]["symbol"] = "ETH/USD"
    moved["venues"][0]["markets"].append({**moved["venues"][0]["markets"][0], "symbol": "ETH/USD"})
    moved["venues"][0]["replay"]["ETH/USD"] = moved["venues"][0]["replay"]["BTC/USD"]
    problems = plan_reload(running, parse_config(moved))
    assert problems[0].startswith("store: changed from") and "restart limitline" in problems[0]
    assert problems[1].startswith("venues[0]: venue sim changed (markets, replay)")
    assert problems[2].startswith("strategies[0].symbol: changed from BTC/USD to ETH/USD") and len(problems) == 3

    allocation = copy.deepcopy(fast_raw)
    allocation["strategies"][0]["allocation"] = {"quote": 100}
    assert plan_reload(running, parse_config(allocation)) == [
        "strategies[0].allocation: changed; an allocation is journaled once (the ledger's books are the record): "
        "it takes effect only after `limitline run --fresh`"
    ]

    # A lockstep replay waits for the strategies it started with.
    lockstep = copy.deepcopy(fast_raw)
    lockstep["venues"][0]["replay"]["BTC/USD"]["lockstep"] = True
    stepped = parse_config(lockstep)
    lockstep["strategies"].append(DIPPER)
    assert "replays in lockstep" in plan_reload(stepped, parse_config(lockstep))[0]

    # Strategies on an exchange venue: changed yes, added no (the connection routes by them).
    raw = ccxt_raw(tmp_path)
    exchange = parse_config(raw)
    more = copy.deepcopy(raw)
    more["strategies"][0]["sizing"] = {"quote": 200}
    assert isinstance(plan_reload(exchange, parse_config(more)), ReloadPlan)
    more["strategies"].append({**raw["strategies"][0], "name": "b"})
    assert "venue binance is an exchange" in plan_reload(exchange, parse_config(more))[0]


async def test_the_watcher_calls_back_when_the_file_changes(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("a: 1\n")
    changed = trio.Event()
    calls = []

    async def on_change() -> None:
        calls.append(path.read_text())
        changed.set()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(watch_config, path, on_change)
            write(path, {"a": 2})  # saved as editors do: a new file renamed over the old
            await changed.wait()
            nursery.cancel_scope.cancel()
    assert calls == ["a: 2\n"]


async def test_removing_a_perpetual_strategys_protection_is_refused_while_its_protective_orders_rest(tmp_path):
    """Review 13d, N4: without its protection the strategy would leave its take-profit and
    stop resting unmanaged (never resized as the position grows, never one-cancels-other)."""
    from test_perpetual_shadow import perp_raw, run

    raw = perp_raw(tmp_path, protection={"take_profit_pct": 3, "stop_loss_pct": 1.5}, candles=200)
    _, _, exchange, _, strategy = await run(raw, evaluated=199)
    # It stops holding a short with its protection resting on the exchange.
    assert Decimal(strategy["position"]) == Decimal("-0.5") and strategy["protection"] == {"take_profit": "0.5", "stop_loss": "0.5"}

    # Started again (the replay has no candle left), not in lockstep so that it may be edited.
    raw["venues"][0]["replay"]["BTC/USD:USD"]["lockstep"] = False
    path = tmp_path / "config.yaml"
    write(path, raw)
    watch = Watch()
    app = App(parse_config(raw), echo=watch, config_path=path)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            await watch.until(lambda _: (node(app.snapshot(), "strategy:trend")["status"] or {}).get("protection"))
            unprotected = copy.deepcopy(raw)
            del unprotected["strategies"][0]["protection"]
            write(path, unprotected)
            outcome = await app.reload("test")
            assert outcome["outcome"] == "rejected", outcome
            assert app.config_problems == [
                "strategies[0].protection: removed while trend's protective orders rest for its position of -0.5 "
                "(stop_loss 0.5, take_profit 0.5): without its protection they would rest unmanaged, never resized as "
                "the position changes; close the position or cancel them first, then save the config again"]
            await watch.until(lambda _: watch.of("config_rejected"))
            assert watch.of("config_rejected")[-1].payload["problems"] == app.config_problems
            tree = app.snapshot()
            assert node(tree, "strategy:trend")["incarnation"] == 1  # not restarted
            assert node(tree, "strategy:trend")["status"]["protection"] == {"take_profit": "0.5", "stop_loss": "0.5"}
            assert app.config.strategies[0].protection is not None  # the running config is unchanged

            # Another edit of its protection is applied: it stays managed.
            tighter = copy.deepcopy(raw)
            tighter["strategies"][0]["protection"]["stop_loss_pct"] = 2
            write(path, tighter)
            assert (await app.reload("test"))["outcome"] == "applied", app.config_problems
            nursery.cancel_scope.cancel()


async def test_removing_a_spot_strategys_protection_is_refused_while_its_list_rests(tmp_path):
    """Review 13d, N4 on spot: the OCO list would rest unmanaged (never replaced as the
    holding changes), locking the coins the strategy's own sells need."""
    never = {"kind": "change", "percent": 50, "lookback": 1}
    holder = {"name": "holder", "venue": "flat", "symbol": "BTC/USD", "sizing": {"quote": 500},
              "allocation": {"quote": 1000, "base": 1, "base_cost": 100}, "buy": never, "sell": never,
              "protection": {"take_profit_pct": 50, "stop_loss_pct": 50}}
    venue = flat_venue(tmp_path)
    venue["balances"]["BTC"] = 1
    raw = {"store": str(tmp_path / "store.sqlite"), "status": {"port": 0}, "venues": [venue], "strategies": [holder]}
    path = tmp_path / "config.yaml"
    write(path, raw)
    watch = Watch()
    app = App(parse_config(raw), echo=watch, config_path=path)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            await watch.until(lambda _: (node(app.snapshot(), "strategy:holder")["status"] or {}).get("protection"))
            unprotected = copy.deepcopy(raw)
            del unprotected["strategies"][0]["protection"]
            write(path, unprotected)
            outcome = await app.reload("test")
            assert outcome["outcome"] == "rejected", outcome
            [problem] = app.config_problems
            assert problem.startswith("strategies[0].protection: removed while holder's protective orders rest for its "
                                      "position of 1 (stop_loss 1, take_profit 1)"), problem
            assert node(app.snapshot(), "strategy:holder")["incarnation"] == 1  # not restarted
            wider = copy.deepcopy(raw)
            wider["strategies"][0]["protection"]["stop_loss_pct"] = 40
            write(path, wider)
            assert (await app.reload("test"))["outcome"] == "applied", app.config_problems
            nursery.cancel_scope.cancel()
