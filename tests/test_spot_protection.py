"""Spot protection: one OCO order list (a limit-maker take-profit and a stop-loss-limit)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from supervisors.config import ConfigError, parse_config

ROOT = Path(__file__).resolve().parents[1]


def raw_with(protection: dict | None, **strategy) -> dict:
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["strategies"] = [dict(copy.deepcopy(raw["strategies"][0]), **strategy)]
    if protection is not None:
        raw["strategies"][0]["protection"] = protection
    return raw


def problems_of(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    return caught.value.problems


def test_a_spot_strategy_on_a_simulated_venue_may_have_protection():
    config = parse_config(raw_with({"take_profit_pct": 3, "stop_loss_pct": 2}))
    protection = config.strategies[0].protection
    assert protection is not None and protection.take_profit_pct == 3 and protection.stop_loss_pct == 2


def test_spot_protection_needs_both_legs_and_no_client_side_exit():
    problems = problems_of(raw_with({"take_profit_pct": 3}, stop_loss_pct=2))
    assert any(p.startswith("strategies[0].protection.stop_loss_pct: an OCO order list") for p in problems)
    assert any(p.startswith("strategies[0].stop_loss_pct: with protection") for p in problems)
    problems = problems_of(raw_with({"take_profit_pct": 3, "stop_loss_pct": 200}))
    assert any(p.startswith("strategies[0].protection.stop_loss_pct: must be above 0") for p in problems)


def ccxt_raw(exchange: str) -> dict:
    raw = raw_with({"take_profit_pct": 3, "stop_loss_pct": 2}, venue="cx")
    raw["venues"].append({"name": "cx", "kind": "ccxt", "exchange": exchange, "market_type": "spot"})
    return raw


def test_spot_protection_is_refused_on_a_ccxt_venue_without_oco_naming_why():
    problems = problems_of(ccxt_raw("kraken"))
    [problem] = [p for p in problems if p.startswith("strategies[0].protection:")]
    assert "OCO order list" in problem and "two separate sells would each lock the same coins" in problem
    assert "'kraken'" in problem or "kraken" in problem


def test_spot_protection_is_allowed_on_ccxt_binance_spot():
    try:
        parse_config(ccxt_raw("binance"))
    except ConfigError as error:
        assert not [p for p in error.problems if "protection" in p], error.problems


# ------------------------------------------------- the ledger and the connection, plain calls

from decimal import Decimal as D  # noqa: E402

from actors.connection.simulated_orders import SimulatedOrders  # noqa: E402
from actors.ledger.core import LedgerCore  # noqa: E402
from actors.messages import LEDGER, CancelOrder, FillReport, OrderCanceled, Reserve, ReservationGranted  # noqa: E402
from actors.orders import Order, OrderState, oco_leg_ids, oco_list_of  # noqa: E402
from exchange.candles import Candle  # noqa: E402
from exchange.markets import MarketRules  # noqa: E402
from exchange.matching import SimulatedExchange  # noqa: E402
from exchange.records import Side  # noqa: E402

MARKET = MarketRules.for_symbol("BTC/USD", tick_size=D("0.01"), lot_size=D("0.001"), min_amount=D("0.001"),
                                min_notional=D("10"), maker_fee=D("0.001"), taker_fee=D("0.002"))
LIST = "ll-a-000000-7"


def oco_order(amount="1") -> Order:
    return Order(LIST, "a", "sim", "BTC/USD", Side.SELL, D("110"), D(amount), OrderState.SUBMITTING, 0, 0,
                 rule="protection:oco@p1", order_type="oco", trigger_price=D("95"), stop_limit_price=D("94"))


def wired(btc="1"):
    ledger = LedgerCore()
    ledger.allocate("a", D("0"), D(btc), 0.0, "test", base_cost=D("100"))
    exchange = SimulatedExchange([MARKET], {"BTC": D(btc)}, volume_share=D("0.5"))
    exchange.observe("BTC/USD", Candle(0, D(100), D(100), D(100), D(100), D(1)))
    return ledger, SimulatedOrders("sim", exchange)


def to_ledger(ledger: LedgerCore, sends) -> None:
    for send in sends:
        if send.to == LEDGER:
            ledger.handle(send.message, 1.0)


def reserve_list(ledger: LedgerCore, amount="1") -> None:
    answer = ledger.handle(Reserve(LIST, "a", Side.SELL, "BTC/USD", "BTC", "USD", D("110"), D(amount), D("0.002"),
                                   "strategy:a"), 0.0)
    assert any(isinstance(s.message, ReservationGranted) for s in answer)


def test_the_legs_ids_name_their_list():
    above, below = oco_leg_ids(LIST)
    assert oco_list_of(above) == oco_list_of(below) == LIST and oco_list_of(LIST) is None


def test_the_ledger_reserves_the_coins_once_and_the_stop_legs_fill_settles_the_list():
    ledger, orders = wired()
    reserve_list(ledger)
    account = ledger.accounts["a"]
    assert account.base_reserved == D("1") and account.base_free == 0  # once for both legs
    accepted = orders.submit(oco_order(), 0.0)
    assert orders.exchange.balances["BTC"].used == D("1")  # and once on the exchange
    assert [type(s.message).__name__ for s in accepted] == ["OrderAccepted"]
    # The market falls through the stop: its leg sells at the stop (a taker), for the list.
    sends = orders.match("BTC/USD", Candle(60, D(99), D(99), D(90), D(91), D(100)), 2.0)
    fills = [s.message for s in sends if isinstance(s.message, FillReport)]
    assert {f.client_order_id for f in fills} == {LIST} and fills[0].price == D("95")
    to_ledger(ledger, sends)
    assert account.base_reserved == 0 and account.base_free == 0
    assert account.quote_free == D("95") - D("95") * D("0.002")
    assert not ledger.open_reservations("a")
    assert [leg.status for leg in orders.exchange.order_list(LIST)] == ["expired", "closed"]


def test_cancelling_the_list_releases_its_one_reservation():
    ledger, orders = wired()
    reserve_list(ledger)
    orders.submit(oco_order(), 0.0)
    sends = orders.cancel(CancelOrder(LIST, "a", "resize"), 1.0)
    [canceled] = [s.message for s in sends if s.to == LEDGER]
    assert isinstance(canceled, OrderCanceled) and canceled.filled == 0
    to_ledger(ledger, sends)
    assert ledger.accounts["a"].base_free == D("1") and ledger.accounts["a"].base_reserved == 0
    assert orders.exchange.balances["BTC"].free == D("1")


def test_a_take_profit_filling_in_part_ends_the_stop_and_the_rest_stays_reserved_once():
    ledger, orders = wired()
    reserve_list(ledger)
    orders.submit(oco_order(), 0.0)
    sends = orders.match("BTC/USD", Candle(60, D(100), D(111), D(99), D(110), D(1)), 2.0)  # half a coin
    to_ledger(ledger, sends)
    account = ledger.accounts["a"]
    assert account.base_reserved == D("0.5") and account.base_free == 0
    above, below = orders.exchange.order_list(LIST)
    assert below.status == "expired" and above.status == "open"


# ------------------------------------------------- the Lab and shadow mode, same cores

import sqlite3  # noqa: E402

import trio  # noqa: E402
from helpers import Watch, lab_ids  # noqa: E402

from exchange.candles import bundled_path, load_candles  # noqa: E402
from supervisors.app import App  # noqa: E402
from supervisors.lab import Lab  # noqa: E402

PROTECTION = {"take_profit_pct": 3, "stop_loss_pct": 2}


def rules_of(config) -> MarketRules:
    m = config.venues[0].markets[0]
    return MarketRules.for_symbol(m.symbol, tick_size=m.tick_size, lot_size=m.lot_size, min_amount=m.min_amount,
                                  min_notional=m.min_notional, maker_fee=m.maker_fee, taker_fee=m.taker_fee)


def test_the_lab_protects_every_holding_with_one_list_and_both_legs_close_positions():
    config = parse_config(raw_with(PROTECTION))
    result = Lab(config.strategies[0], rules_of(config), load_candles(bundled_path())[:600], volume_share=D("0.1")).run()
    lists = [o for o in result.orders.values() if o.order_type == "oco"]
    assert lists and all(o.side is Side.SELL and o.rule.startswith("protection:oco") for o in lists)
    by_exit = {"take_profit": 0, "stop_loss": 0}
    for o in lists:
        fills = [f for f in result.fills if f.client_order_id == o.client_order_id]
        if o.state is OrderState.FILLED:
            assert sum(f.amount for f in fills) == o.amount
            for f in fills:
                if f.price == o.price:
                    by_exit["take_profit"] += 1
                    assert f.taker_or_maker == "maker"  # a limit-maker never takes
                else:
                    by_exit["stop_loss"] += 1
                    assert f.price <= o.trigger_price and f.price >= o.stop_limit_price
        else:
            assert o.state is OrderState.CANCELED and not fills  # the strategy's sells cancelled it first
    assert by_exit["take_profit"] >= 1 and by_exit["stop_loss"] >= 1, by_exit
    # Each buy's holding was protected: a list follows every filled buy.
    buys = sorted(int(o.client_order_id.rsplit("-", 1)[1]) for o in result.orders.values()
                  if o.side is Side.BUY and o.state is OrderState.FILLED)
    protected = {int(o.client_order_id.rsplit("-", 1)[1]) for o in lists}
    assert all(b + 1 in protected for b in buys)
    kinds = {e.kind for e in result.events}
    assert {"protection_placed", "closed_by_protection"} <= kinds


async def test_shadow_mode_and_the_lab_make_the_same_protective_orders_and_fills(tmp_path, fast_raw):
    lines = bundled_path().read_text().splitlines()
    data = tmp_path / "candles.csv"
    data.write_text("\n".join(lines[:401]) + "\n")
    fast_raw["venues"][0]["replay"]["BTC/USD"] = {"data": str(data), "lockstep": True}
    fast_raw["venues"][0]["volume_share"] = "0.01"
    fast_raw["strategies"] = [dict(fast_raw["strategies"][0], protection=PROTECTION)]
    config = parse_config(fast_raw)
    watch = Watch()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await nursery.start(App(config, echo=watch).run)
            await watch.until(lambda events: watch.count("replay_finished") == 1)
            nursery.cancel_scope.cancel()
    store = sqlite3.connect(config.store)
    ids = lab_ids(store)  # the store's ids carry its instance; the Lab's do not
    [(instance,)] = store.execute("SELECT value FROM meta WHERE key = 'client_order_id_instance'")
    lists = [cid for (cid,) in store.execute("SELECT client_order_id FROM orders WHERE order_type = 'oco'")]
    assert instance and lists and all(f"-{instance}-" in cid for cid in ids)  # OCO lists too: unique per store
    shadow_orders = {
        ids[cid]: (side, D(price), D(amount), state, D(filled), kind)
        for cid, side, price, amount, state, filled, kind in store.execute(
            "SELECT client_order_id, side, price, amount, state, filled, order_type FROM orders")
    }
    shadow_fills = [
        (ids[cid], trade, D(price), D(amount))
        for cid, trade, price, amount in store.execute(
            "SELECT client_order_id, trade_id, price, amount FROM fills ORDER BY CAST(trade_id AS INTEGER)")
    ]
    lab = Lab(config.strategies[0], rules_of(config), load_candles(data), volume_share=D("0.01")).run()
    lab_orders = {o.client_order_id: (o.side.value, o.price, o.amount, o.state.value, o.filled, o.order_type)
                  for o in lab.orders.values()}
    lab_fills = [(f.client_order_id, f.trade_id, f.price, f.amount) for f in lab.fills]
    assert sum(1 for o in lab_orders.values() if o[5] == "oco" and o[3] == "FILLED") >= 2, "too little to compare"
    if shadow_orders != lab_orders:
        for cid in sorted(set(shadow_orders) | set(lab_orders), key=lambda c: int(c.rsplit("-", 1)[1])):
            print(cid, shadow_orders.get(cid), lab_orders.get(cid))
    assert shadow_orders == lab_orders
    assert shadow_fills == lab_fills


def test_a_holding_above_its_take_profit_is_sold_not_protected_by_a_list_the_exchange_would_refuse():
    # The starting coins cost 60 each while the market trades near 2,500: the take-profit (61.80)
    # lies below the last trade, a list Binance refuses (-2010) at every candle. The
    # take-profit counts as reached: the holding is sold with one crossing limit.
    raw = raw_with(PROTECTION, allocation={"quote": 8000, "base": 0.6, "base_cost": 60})
    config = parse_config(raw)
    result = Lab(config.strategies[0], rules_of(config), load_candles(bundled_path())[:50], volume_share=D("0.1")).run()
    kinds = [e.kind for e in result.events]
    assert "protection_refused" not in kinds and not [o for o in result.orders.values() if o.order_type == "oco"
                                                      and o.state is OrderState.REJECTED]
    [escalated] = [e for e in result.events if e.kind == "protection_escalated"][:1]
    assert "take-profit counts as reached" in escalated.reason
    [sale] = [o for o in result.orders.values() if o.rule.startswith("protection:escalation")][:1]
    assert sale.side is Side.SELL and sale.state is OrderState.FILLED and sale.amount == D("0.6")
    [fill] = [f for f in result.fills if f.client_order_id == sale.client_order_id]
    # From the venue's price before the first candle (its open, 2505.56), 1 % below, to the tick.
    assert sale.price == fill.price == D("2480.50") and fill.amount == D("0.6")


def spot_protected_core(stop_loss="1"):
    """A strategy's core holding 1 BTC bought at 100 (a 2 % take-profit, ``stop_loss`` %)."""
    from test_strategy_core import facts, settings

    from actors.messages import AccountInfo, Reconciled, VenueInfo
    from actors.strategy.core import StrategyCore
    from actors.strategy.settings import Allocation, ProtectionConfig

    core = StrategyCore(settings(allocation=Allocation(quote=D("1000")),
                                 protection=ProtectionConfig(take_profit_pct=D(2), stop_loss_pct=D(stop_loss))))
    core.start(0.0)
    for message in (VenueInfo(facts()), AccountInfo("dip", D("900"), D(0), D(0), D(0)), Reconciled("sim"),
                    VenueInfo(facts()), AccountInfo("dip", D("900"), D(0), D(0), D(0))):
        core.handle(message, 0.0)
    assert core.active
    return core, AccountInfo("dip", D("900"), D(0), D("1"), D(0), cost_basis=D("100"))


def place_list(core, sends, at: float) -> str:
    from actors.messages import OrderDurable

    [reserve] = [s.message for s in sends if isinstance(s.message, Reserve)]
    core.handle(ReservationGranted(reserve.client_order_id), at)
    core.handle(OrderDurable(reserve.client_order_id), at)
    return reserve.client_order_id


def test_a_refused_list_is_placed_again_at_the_next_candle_once_and_escalated_once_the_price_has_passed_it():
    """Plain calls: the exchange refuses a list (its last trade had run below the stop
    while the strategy's last close was above). One ``protection_refused``; nothing is
    sent again until the next candle; that candle's close decides: inside the list's range
    it is placed again, past its stop the holding is escalated with a crossing limit sell,
    never a list the exchange must refuse again."""
    from test_strategy_core import candle

    from actors.messages import AccountInfo, OrderRejected, RecordEvent

    core, holding = spot_protected_core()
    core.handle(candle(0, "100.50"), 0.5)
    first = place_list(core, core.handle(holding, 1.0), 1.0)
    refusal = 'rejected: InvalidOrder: binance {"code": -2010, "msg": "The relationship of the prices for the orders is not correct."}'
    out = core.handle(OrderRejected(first, refusal, 2.0), 2.0)
    assert [e.kind for e in (s.message for s in out) if isinstance(e, RecordEvent)].count("protection_refused") == 1
    out = core.handle(AccountInfo("dip", D("900"), D(0), D("1"), D(0), cost_basis=D("100")), 2.5)  # the release
    assert not [s for s in out if isinstance(s.message, Reserve)]  # not again within the candle
    out = core.handle(candle(1, "100.20"), 3.0)  # inside 99..102: placed again
    second = place_list(core, out, 3.0)
    assert second != first and core.orders[second].order_type == "oco"
    out = core.handle(OrderRejected(second, refusal, 4.0), 4.0)
    core.handle(AccountInfo("dip", D("900"), D(0), D("1"), D(0), cost_basis=D("100")), 4.5)
    out = core.handle(candle(2, "98.70"), 5.0)  # below the stop's trigger 99: fired
    kinds = [s.message.kind for s in out if isinstance(s.message, RecordEvent)]
    assert "protection_escalated" in kinds, kinds
    # The buy rule fired too (-1.5 %): no buy while the holding is being sold.
    [blocked] = [s.message for s in out if isinstance(s.message, RecordEvent) and s.message.kind == "blocked"]
    assert "being sold by an escalation" in blocked.reason
    [reserve] = [s.message for s in out if isinstance(s.message, Reserve)]
    order = core.orders[reserve.client_order_id]
    assert order.order_type == "limit" and order.side is Side.SELL and order.rule.startswith("protection:escalation")
    assert order.price == D("97.71") and order.amount == D("1")  # 98.70 x (1 - 1 %), down to the tick
    out = core.handle(candle(3, "98.50"), 6.0)
    assert not [s for s in out if isinstance(s.message, Reserve)]  # one escalation, no list meanwhile


def test_the_labs_fast_path_trades_protection_exactly_like_stepping_every_candle():
    """The fast path skips candles on which nothing can happen: a waiting stop's trigger (on
    the lows) and a triggered stop's gap (on the closes) must count as something."""
    config = parse_config(raw_with({"take_profit_pct": 2, "stop_loss_pct": 1, "stop_limit_slippage_pct": 0.1}))
    candles = load_candles(bundled_path())[:1500]
    stepped = Lab(config.strategies[0], rules_of(config), candles, volume_share=D("0.01"), keep_events=False).run()
    fast = Lab(config.strategies[0], rules_of(config), candles, volume_share=D("0.01"), keep_events=False, fast=True).run()
    lists = [o for o in stepped.orders.values() if o.order_type == "oco"]
    assert len(lists) >= 10
    assert fast.orders == stepped.orders and fast.fills == stepped.fills and fast.journal == stepped.journal


def test_a_gapped_stop_is_escalated_with_a_crossing_limit_sell_after_the_list_is_cancelled():
    never = {"kind": "change", "percent": 50, "lookback": 1}
    raw = raw_with({"take_profit_pct": 2, "stop_loss_pct": 1, "stop_limit_slippage_pct": 0.1, "gap_slippage_pct": 1},
                   allocation={"quote": 1000, "base": 1, "base_cost": 100}, buy=never, sell=never)
    config = parse_config(raw)
    flat = [Candle(3600 * i, D(100), D(100), D(100), D(100), D(100)) for i in range(5)]
    gap = [Candle(3600 * (5 + i), D(90), D(91), D(89), D(90), D(100)) for i in range(3)]
    result = Lab(config.strategies[0], rules_of(config), flat + gap, volume_share=D("0.5")).run()
    [oco] = [o for o in result.orders.values() if o.order_type == "oco"]
    assert (oco.price, oco.trigger_price, oco.stop_limit_price) == (D("102"), D("99"), D("98.90"))  # 99 x 0.999, down to the tick
    assert oco.state is OrderState.CANCELED  # triggered at the open (90), its limit above the market: stuck
    [escalation] = [o for o in result.orders.values() if o.rule.startswith("protection:escalation")]
    assert escalation.side is Side.SELL and escalation.price == D("89.10") and escalation.state is OrderState.FILLED
    [fill] = [f for f in result.fills if f.client_order_id == escalation.client_order_id]
    assert fill.price == D("90") and fill.amount == D("1")  # crossing: taken at the last trade
    kinds = [e.kind for e in result.events]
    assert "protection_escalated" in kinds and kinds.index("protection_escalated") < kinds.index("closed_by_protection")


def test_after_a_restart_the_list_of_record_is_adopted_not_placed_again():
    """The core's plain calls: the list resting on the exchange when the process stopped is
    the protection's again (it rests there: placing another would lock the coins twice);
    a new holding then resizes it cancel-first."""
    from test_strategy_core import facts, settings

    from actors.messages import AccountInfo, Reconciled, RecordEvent, VenueInfo
    from actors.strategy.core import StrategyCore
    from actors.strategy.settings import Allocation, ProtectionConfig

    core = StrategyCore(settings(allocation=Allocation(quote=D("1000")),
                                 protection=ProtectionConfig(take_profit_pct=D(2), stop_loss_pct=D(1))))
    resting = Order("ll-dip-1", "dip", "sim", "BTC/USD", Side.SELL, D("102"), D("1"), OrderState.OPEN, 0, 0,
                    rule="protection:oco@p1", exchange_order_id="7", order_type="oco", trigger_price=D("99"),
                    stop_limit_price=D("98.50"))
    core.restore([resting], 0.0)
    core.start(0.0)
    holding = AccountInfo("dip", D("900"), D(0), D(0), D("1"), cost_basis=D("100"))  # the list holds the coin
    for message in (VenueInfo(facts()), holding, Reconciled("sim"), VenueInfo(facts())):
        core.handle(message, 0.0)
    out = core.handle(holding, 0.0)
    assert core.active
    assert not [s for s in out if isinstance(s.message, (Reserve, CancelOrder))]  # adopted as it is
    assert not [s for s in out if isinstance(s.message, RecordEvent) and s.message.kind.startswith("protection")]
    # A second coin bought: the list is cancelled first; the new one waits for the coins.
    out = core.handle(AccountInfo("dip", D("800"), D(0), D("1"), D("1"), cost_basis=D("200")), 1.0)
    [cancel] = [s.message for s in out if isinstance(s.message, CancelOrder)]
    assert cancel.client_order_id == "ll-dip-1" and not [s for s in out if isinstance(s.message, Reserve)]


def _restarted_spot(balances=None, last="100"):
    """A spot strategy restarted with one coin held under its list of record (take-profit
    102, stop 99 / 98.50), reconciled; ``balances``: the exchange's (pre-flight may fail)."""
    from test_strategy_core import facts, settings

    from actors.messages import AccountInfo, Reconciled, VenueInfo
    from actors.strategy.core import StrategyCore
    from actors.strategy.settings import Allocation, ProtectionConfig

    core = StrategyCore(settings(allocation=Allocation(quote=D("1000")),
                                 protection=ProtectionConfig(take_profit_pct=D(2), stop_loss_pct=D(1))))
    resting = Order("ll-dip-1", "dip", "sim", "BTC/USD", Side.SELL, D("102"), D("1"), OrderState.OPEN, 0, 0,
                    rule="protection:oco@p1", exchange_order_id="7", order_type="oco", trigger_price=D("99"),
                    stop_limit_price=D("98.50"))
    core.restore([resting], 0.0)
    core.start(0.0)
    holding = AccountInfo("dip", D("900"), D(0), D(0), D("1"), cost_basis=D("100"),
                          account_holdings={"USD": D("900"), "BTC": D("1")})
    venue = VenueInfo(facts(balances=balances or {"USD": D("10000"), "BTC": D("5")}, last_prices={"BTC/USD": D(last)}))
    out = []
    for message in (venue, holding, Reconciled("sim"), venue, holding):
        out += core.handle(message, 0.0)
    return core, out


def _kinds(out) -> list[str]:
    from actors.messages import RecordEvent
    return [s.message.kind for s in out if isinstance(s.message, RecordEvent)]


def test_a_list_gapped_while_limitline_was_down_is_escalated_at_start_up():
    """Review 13c, F2 (spot): the list was judged only at the next candle's close."""
    core, out = _restarted_spot(last="98")
    assert core.active and "protection_escalating" in _kinds(out)
    [cancel] = [s.message for s in out if isinstance(s.message, CancelOrder)]
    assert cancel.client_order_id == "ll-dip-1"


def test_a_spot_strategy_whose_pre_flight_fails_still_escalates_the_list_of_what_it_holds():
    """Review 13c, F14 (spot): protection ran only while active."""
    from test_strategy_core import candle

    core, out = _restarted_spot(balances={"USD": D("10000"), "BTC": D("0")})
    assert not core.active and "preflight_failed" in _kinds(out)
    out = core.handle(candle(5, "98"), 1.0)
    assert "protection_escalating" in _kinds(out)
    assert [s.message.client_order_id for s in out if isinstance(s.message, CancelOrder)] == ["ll-dip-1"]


def test_a_take_profit_leg_trading_in_part_ends_the_stop_leg_and_the_rest_is_protected_by_a_new_list():
    """Review N7: one leg of a list trading, even in part, ends the other (Binance does). The
    rest of the holding then has no stop: the list is replaced by one for what is held, and
    the drop is met by that list's stop, not by an escalation at the close."""
    never = {"kind": "change", "percent": 50, "lookback": 1}
    raw = raw_with({"take_profit_pct": 2, "stop_loss_pct": 1, "stop_limit_slippage_pct": 0.1, "gap_slippage_pct": 1},
                   allocation={"quote": 1000, "base": 1, "base_cost": 100}, buy=never, sell=never)
    config = parse_config(raw)

    def flat(start: int, n: int, price: int = 100) -> list[Candle]:
        return [Candle(3600 * (start + i), D(price), D(price), D(price), D(price), D(100)) for i in range(n)]

    thin = Candle(3600 * 5, D(100), D(103), D(100), D(100), D("0.6"))  # the take-profit (102) trades 0.3 of 1
    drop = Candle(3600 * 9, D(100), D(100), D(95), D(96), D(100))
    candles = flat(0, 5) + [thin] + flat(6, 3) + [drop] + flat(10, 3, 96)
    result = Lab(config.strategies[0], rules_of(config), candles, volume_share=D("0.5")).run()
    first, second = sorted((o for o in result.orders.values() if o.order_type == "oco"), key=lambda o: o.created_at)
    assert (first.state, first.filled) == (OrderState.CANCELED, D("0.30"))  # its stop leg ended by the exchange
    assert (second.amount, second.trigger_price, second.state) == (D("0.70"), D("99.00"), OrderState.FILLED)
    [unprotected] = [e for e in result.events if e.kind == "unprotected"]
    assert "ended its stop leg" in unprotected.reason
    assert [(f.price, f.amount) for f in result.fills if f.client_order_id == second.client_order_id] == [
        (D("99.00"), D("0.70"))]  # at the stop, inside the drop candle
    assert not [e for e in result.events if e.kind.startswith("protection_escalat")]


def test_while_a_refused_list_leaves_the_holding_unprotected_no_buy_adds_to_it_and_the_list_is_tried_again_in_seconds():
    """Review N2: a list refused (or never placed) leaves what is held without protection:
    ``unprotected`` says so, buys are blocked until a list rests, and the list is placed
    again after 1 s (doubling), on the shell's timer, not only at the next candle."""
    from test_strategy_core import candle

    from actors.messages import AccountInfo, OrderAccepted, OrderRejected, RecordEvent, Tick

    core, holding = spot_protected_core()
    core.handle(candle(0, "100.50"), 0.5)
    first = place_list(core, core.handle(holding, 1.0), 1.0)
    out = core.handle(OrderRejected(first, "rejected: ExchangeNotAvailable: never placed", 2.0), 2.0)
    kinds = {s.message.kind: s.message for s in out if isinstance(s.message, RecordEvent)}
    assert "placed again in 1s" in kinds["protection_refused"].reason
    assert "no OCO list resting" in kinds["unprotected"].reason
    core.handle(AccountInfo("dip", D("900"), D(0), D("1"), D(0), cost_basis=D("100")), 2.5)  # the release
    assert core.wake_at() == 3.0
    assert not [s for s in core.handle(Tick(2.9), 2.9) if isinstance(s.message, Reserve)]
    second = place_list(core, core.handle(Tick(3.0), 3.0), 3.0)  # before any candle
    assert core.orders[second].order_type == "oco" and core.wake_at() is None
    out = core.handle(candle(1, "99.40"), 3.5)  # -1.1 %: the buy rule fires
    [blocked] = [s.message for s in out if isinstance(s.message, RecordEvent) and s.message.kind == "blocked"]
    assert "no OCO list resting" in blocked.reason and not [s for s in out if isinstance(s.message, Reserve)]
    core.handle(OrderAccepted(second, "list-9", 4.0), 4.0)  # the list rests: buys may add again
    core.handle(candle(2, "100.60"), 5.0)
    out = core.handle(candle(3, "99.50"), 6.0)  # -1.1 % again, above the stop's trigger 99
    [reserve] = [s.message for s in out if isinstance(s.message, Reserve)]
    assert reserve.side is Side.BUY
