"""The perpetuals engine with plain calls, and a stateful property test of its invariants."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from exchange.candles import Candle
from exchange.matching import Rejection
from exchange.perpetuals import (
    CODE_DUPLICATE_CLIENT_ID,
    CODE_INVALID_LEVERAGE,
    CODE_INVALID_ORDER_TYPE,
    CODE_MARGIN_INSUFFICIENT,
    CODE_MARGIN_TYPE_OPEN_ORDERS,
    CODE_MARGIN_TYPE_POSITION,
    CODE_MIN_NOTIONAL,
    CODE_NO_NEED_TO_CHANGE_MARGIN_TYPE,
    CODE_POST_ONLY_REJECTED,
    CODE_PRICE_TICK,
    CODE_REDUCE_ONLY_REJECTED,
    CODE_WOULD_IMMEDIATELY_TRIGGER,
    PerpetualExchange,
    load_funding_rates,
    perpetual_rules,
)
from exchange.records import Side

S = "BTC/USDT:USDT"
HOUR = 3600


def rules(**overrides):
    values = dict(tick_size=D("0.1"), lot_size=D("0.001"), min_amount=D("0.001"), min_notional=D("5"),
                  maker_fee=D("0.0002"), taker_fee=D("0.0005"))
    return perpetual_rules(S, **(values | overrides))


def engine(wallet="1000", **kwargs) -> PerpetualExchange:
    x = PerpetualExchange([rules()], D(wallet), **kwargs)
    x.match(S, candle(0, 100), 0)  # the mark: 100
    return x


def candle(ts_hours: float, o, h=None, l=None, c=None, v="1000") -> Candle:  # noqa: E741
    o = D(str(o))
    h = D(str(h)) if h is not None else o
    l = D(str(l)) if l is not None else o  # noqa: E741
    c = D(str(c)) if c is not None else o
    return Candle(int(ts_hours * HOUR), o, max(o, h, c), min(o, l, c), c, D(v))


def ok(result):
    assert not isinstance(result, Rejection), result
    return result


def code(result) -> int:
    assert isinstance(result, Rejection), result
    return result.code


def income(x, kind):
    return sum((e.amount for e in x.income if e.income_type == kind), D(0))


# ---------------------------------------------------------------- positions


def test_a_long_opened_as_maker_and_closed_by_a_reduce_only_take_profit_books_pnl_and_fees():
    x = engine()
    ok(x.create_limit_order(S, Side.BUY, D("2"), D("99"), "open", 1))
    x.match(S, candle(1, 100, l=98.5), 2)
    pos = x.position(S)
    assert (pos.size, pos.entry_price) == (D(2), D(99))
    assert x.trades[-1].maker and x.trades[-1].fee == D("99") * 2 * D("0.0002")
    ok(x.create_limit_order(S, Side.SELL, D("2"), D("105"), "tp", 3, reduce_only=True))
    x.match(S, candle(2, 101, h=104.9), 4)
    assert pos.size == 2  # trading at 104.9 says nothing about a sell at 105
    x.match(S, candle(3, 104, h=106), 5)
    assert pos.size == 0 and pos.realized_pnl == D(12)
    fees = D("99") * 2 * D("0.0002") + D("105") * 2 * D("0.0002")
    assert pos.fees == fees
    assert x.wallet == D(1000) + 12 - fees
    assert x.wallet == x.initial_wallet + sum(e.amount for e in x.income)


def test_a_fill_larger_than_the_position_flips_it_at_the_fill_price():
    x = engine()
    ok(x.create_limit_order(S, Side.BUY, D("1"), D("99"), "a", 1))
    x.match(S, candle(1, 100, l=98), 2)
    ok(x.create_limit_order(S, Side.SELL, D("3"), D("102"), "b", 3))
    x.match(S, candle(2, 101, h=103), 4)
    pos = x.position(S)
    assert (pos.size, pos.entry_price, pos.realized_pnl) == (D(-2), D(102), D(3))


def test_a_crossing_limit_is_a_taker_at_the_last_price_and_post_only_is_refused():
    x = engine()
    assert code(x.create_limit_order(S, Side.BUY, D(1), D(101), "po", 1, post_only=True)) == CODE_POST_ONLY_REJECTED
    order = ok(x.create_limit_order(S, Side.BUY, D(1), D(101), "t", 1))
    assert order.status == "closed" and order.average_price == D(100)
    trade = x.trades[-1]
    assert not trade.maker and trade.fee == D(100) * D("0.0005")
    assert ok(x.create_limit_order(S, Side.BUY, D(1), D("99.9"), "m", 1, post_only=True)).status == "open"


def test_a_crossing_limit_takes_no_more_than_the_candles_volume_allows_and_the_rest_rests_as_a_maker():
    # The last candle traded 20 BTC; crossing orders may take 10 % of it (2 BTC) until the next.
    x = PerpetualExchange([rules()], D(100_000), volume_share=D("0.1"))
    x.match(S, candle(0, 100, v="20"), 0)
    first = ok(x.create_limit_order(S, Side.BUY, D(3), D(101), "a", 1))
    assert (first.status, first.filled) == ("open", D(2))  # 2 taken at the last price, 1 rests at 101
    [taken] = x.trades
    assert (taken.price, taken.amount, taken.maker) == (D(100), D(2), False)
    assert taken.fee == D(100) * 2 * D("0.0005")  # the taker fee on what was taken
    second = ok(x.create_limit_order(S, Side.BUY, D(1), D(102), "b", 1))
    assert second.filled == 0 and len(x.trades) == 1  # the candle's share is used up
    # The next candle trades below both: the rests fill at their own prices, as makers.
    x.match(S, candle(1, 100, l=99, v="20"), 2)
    assert [(t.client_order_id, t.price, t.amount, t.maker) for t in x.trades[1:]] == [
        ("b", D(102), D(1), True), ("a", D(101), D(1), True)]
    assert x.trades[-1].fee == D(101) * D("0.0002")
    assert x.position(S).size == 4


def test_the_spot_and_perpetual_engines_cap_a_crossing_fill_by_one_rule():
    from exchange.fill_rules import TakerLiquidity
    from exchange.markets import MarketRules
    from exchange.matching import SimulatedExchange

    spot_rules = MarketRules.for_symbol("BTC/USDT", tick_size=D("0.1"), lot_size=D("0.001"), min_amount=D("0.001"),
                                        min_notional=D("5"), maker_fee=D("0.0002"), taker_fee=D("0.0005"))
    spot = SimulatedExchange([spot_rules], {"USDT": D(100_000), "BTC": D(0)}, D("0.05"))
    perp = PerpetualExchange([rules()], D(100_000), volume_share=D("0.05"))
    bar = candle(0, 100, v="37.77")
    spot.match("BTC/USDT", bar, 0)
    perp.match(S, bar, 0)
    spot_order = spot.create_limit_order("BTC/USDT", Side.BUY, D(5), D(101), "s", 1)
    perp_order = ok(perp.create_limit_order(S, Side.BUY, D(5), D(101), "p", 1))
    liquidity = TakerLiquidity(D("0.05"))
    liquidity.observe(rules(), bar)
    expected = liquidity.take(S, D(5))
    assert expected == D("1.888")  # 5 % of 37.77, on the lot
    assert spot_order.filled == perp_order.filled == expected
    assert spot.trades[-1].taker_or_maker == "taker" and not perp.trades[-1].maker
    assert spot.trades[-1].price == perp.trades[-1].price == D(100)


def test_reduce_only_is_refused_when_it_could_only_increase_and_never_exceeds_the_position():
    x = engine()
    assert code(x.create_limit_order(S, Side.SELL, D(1), D(105), "r0", 1, reduce_only=True)) == CODE_REDUCE_ONLY_REJECTED
    ok(x.create_limit_order(S, Side.BUY, D(1), D(100), "long", 1))  # taker: long 1
    assert code(x.create_limit_order(S, Side.BUY, D(1), D(90), "r1", 1, reduce_only=True)) == CODE_REDUCE_ONLY_REJECTED
    big = ok(x.create_limit_order(S, Side.SELL, D(3), D(105), "r2", 1, reduce_only=True))
    other = ok(x.create_limit_order(S, Side.SELL, D(1), D(106), "r3", 1, reduce_only=True))
    x.match(S, candle(1, 104, h=110), 2)
    assert x.position(S).size == 0
    assert (big.filled, big.status) == (D(1), "expired")
    assert (other.filled, other.status) == (D(0), "expired")  # the position closed: it could only open one


def test_a_limit_beyond_the_marks_band_is_refused():
    x = engine()
    assert code(x.create_limit_order(S, Side.BUY, D(1), D("105.1"), "far-buy", 1)) == -4016
    assert code(x.create_limit_order(S, Side.SELL, D(1), D("94.9"), "far-sell", 1)) == -4024
    assert ok(x.create_limit_order(S, Side.BUY, D(1), D(105), "edge", 1)).average_price == D(100)


def test_the_minimum_notional_is_waived_for_reduce_only_and_ticks_are_checked():
    x = engine()
    assert code(x.create_limit_order(S, Side.BUY, D("0.01"), D(99), "small", 1)) == CODE_MIN_NOTIONAL
    assert code(x.create_limit_order(S, Side.BUY, D(1), D("99.05"), "tick", 1)) == CODE_PRICE_TICK
    ok(x.create_limit_order(S, Side.BUY, D(1), D(100), "long", 1))
    assert ok(x.create_limit_order(S, Side.SELL, D("0.01"), D(110), "tiny-close", 1, reduce_only=True)).status == "open"
    assert code(x.create_limit_order(S, Side.SELL, D("0.01"), D(111), "tiny-close", 1, reduce_only=True)) == CODE_DUPLICATE_CLIENT_ID


# ------------------------------------------------------------------- margin


def test_initial_margin_is_notional_over_leverage_and_an_order_beyond_it_is_refused():
    x = engine(wallet="100")
    ok(x.set_leverage(S, 10))
    # Held: notional / leverage plus the worst-case (taker) fee: 990 / 10 + 990 * 0.0005.
    assert code(x.create_limit_order(S, Side.BUY, D("10.1"), D(99), "too-big", 1)) == CODE_MARGIN_INSUFFICIENT
    order = ok(x.create_limit_order(S, Side.BUY, D(10), D(99), "fits", 1))
    assert order.margin == D("99.495")
    assert x.available_margin() == D("0.505")
    assert code(x.set_leverage(S, 0)) == CODE_INVALID_LEVERAGE
    assert code(x.set_leverage(S, 126)) == CODE_INVALID_LEVERAGE


def test_a_closing_order_needs_margin_only_for_what_would_open():
    x = engine(wallet="100")
    ok(x.set_leverage(S, 10))
    ok(x.create_limit_order(S, Side.BUY, D(5), D(100), "long", 1))  # taker; margin 50 in the position
    flip = ok(x.create_limit_order(S, Side.SELL, D(8), D(110), "flip", 1))
    assert flip.margin == D(3) * 110 / 10 + D(3) * 110 * D("0.0005")


def test_margin_mode_changes_are_refused_as_binance_does():
    x = engine()
    assert code(x.set_margin_mode(S, "cross")) == CODE_NO_NEED_TO_CHANGE_MARGIN_TYPE
    ok(x.create_limit_order(S, Side.BUY, D(1), D(90), "resting", 1))
    assert code(x.set_margin_mode(S, "isolated")) == CODE_MARGIN_TYPE_OPEN_ORDERS
    ok(x.cancel_order(client_order_id="resting"))
    ok(x.create_limit_order(S, Side.BUY, D(1), D(100), "long", 1))
    assert code(x.set_margin_mode(S, "isolated")) == CODE_MARGIN_TYPE_POSITION


def test_an_isolated_position_holds_its_margin_which_an_operator_can_move():
    x = engine()
    ok(x.set_margin_mode(S, "isolated"))
    ok(x.set_leverage(S, 10))
    ok(x.create_limit_order(S, Side.BUY, D(2), D(100), "long", 1))
    pos = x.position(S)
    assert pos.isolated_wallet == D(20)
    ok(x.adjust_isolated_margin(S, D(5)))
    assert pos.isolated_wallet == D(25) and x.cross_wallet() == x.wallet - 25
    assert code(x.adjust_isolated_margin(S, D(-6))) == -4051  # below the initial margin
    ok(x.adjust_isolated_margin(S, D(-5)))


def test_collateral_withdrawn_beyond_what_is_available_is_refused():
    x = engine(wallet="100")
    ok(x.create_limit_order(S, Side.BUY, D(10), D(99), "open", 1))  # 49.5 + 0.495 held at 20x
    assert code(x.transfer(D("-50.1"), 1)) == CODE_MARGIN_INSUFFICIENT
    ok(x.transfer(D("-50"), 1))
    assert x.wallet == D(50) and income(x, "TRANSFER") == D(-50)
    assert code(x.create_limit_order(S, Side.BUY, D(1), D(99), "more", 1)) == CODE_MARGIN_INSUFFICIENT


# ------------------------------------------------------- conditional orders


def test_a_stop_limit_fires_on_the_candles_range_and_its_crossing_child_takes():
    x = engine()
    ok(x.create_limit_order(S, Side.BUY, D(1), D(100), "long", 1))
    assert code(x.create_conditional_order(S, Side.SELL, "STOP", D(1), D(99), D(100), "sl-now", 1, reduce_only=True)) == CODE_WOULD_IMMEDIATELY_TRIGGER
    stop = ok(x.create_conditional_order(S, Side.SELL, "STOP", D(1), D(94), D(95), "sl", 1, reduce_only=True))
    x.match(S, candle(1, 99, l="95.1"), 2)
    assert stop.status == "NEW"
    x.match(S, candle(2, 98, l=93), 3)
    assert stop.status == "FINISHED" and stop.actual_order_id
    child = x.orders[stop.actual_order_id]
    assert (child.origin_type, child.status, child.average_price) == ("STOP", "closed", D(95))
    assert x.position(S).size == 0 and x.position(S).realized_pnl == D(-5)
    assert not x.trades[-1].maker


def test_a_gapped_stop_limit_triggers_and_rests_unfilled_while_the_position_stays_open():
    x = engine()
    ok(x.create_limit_order(S, Side.BUY, D(1), D(100), "long", 1))
    stop = ok(x.create_conditional_order(S, Side.SELL, "STOP", D(1), D(94), D(95), "sl", 1, reduce_only=True))
    x.match(S, candle(1, 90, h=93, l=88, c=91), 2)  # opened below the limit
    assert stop.status == "TRIGGERED"
    child = x.orders[stop.actual_order_id]
    assert child.status == "open" and x.position(S).size == 1
    x.match(S, candle(2, 91, h=94, l=90), 3)  # trades at the limit, not through it
    assert child.status == "open"
    x.match(S, candle(3, 93, h=95, l=92), 4)
    assert child.status == "closed" and x.position(S).size == 0 and stop.status == "FINISHED"
    assert x.trades[-1].maker and x.trades[-1].price == D(94)


def test_a_take_profit_limit_fires_on_the_way_up_for_a_sell():
    x = engine()
    ok(x.create_limit_order(S, Side.BUY, D(1), D(100), "long", 1))
    tp = ok(x.create_conditional_order(S, Side.SELL, "TAKE_PROFIT", D(1), D(111), D(110), "tp", 1, reduce_only=True))
    x.match(S, candle(1, 100, l=90), 2)
    assert tp.status == "NEW"
    x.match(S, candle(2, 105, h=112), 3)
    assert tp.status == "TRIGGERED"  # the child rests from the next candle (the path inside is unknown)
    x.match(S, candle(3, 110, h=112), 4)
    assert tp.status == "FINISHED" and x.position(S).realized_pnl == D(11)


def test_a_symbol_holds_at_most_ten_waiting_conditional_orders():
    x = engine()
    ok(x.create_limit_order(S, Side.BUY, D(1), D(100), "long", 1))
    for i in range(10):
        ok(x.create_conditional_order(S, Side.SELL, "STOP", D(1), D(90), D(90 + i), f"sl{i}", 1, reduce_only=True))
    assert code(x.create_conditional_order(S, Side.SELL, "STOP", D(1), D(80), D(80), "sl10", 1, reduce_only=True)) == -4045
    ok(x.cancel_conditional_order(client_algo_id="sl0"))
    ok(x.create_conditional_order(S, Side.SELL, "STOP", D(1), D(80), D(80), "sl10", 1, reduce_only=True))


def test_a_cancelled_conditional_order_never_fires():
    x = engine()
    ok(x.create_limit_order(S, Side.BUY, D(1), D(100), "long", 1))
    ok(x.create_conditional_order(S, Side.SELL, "STOP", D(1), D(94), D(95), "sl", 1, reduce_only=True))
    assert ok(x.cancel_conditional_order(client_algo_id="sl")).status == "CANCELED"
    x.match(S, candle(1, 99, l=80), 2)
    assert x.position(S).size == 1


# ------------------------------------------------------ funding, liquidation


def test_funding_every_eight_hours_a_long_pays_a_positive_rate_and_a_table_overrides_it(tmp_path):
    table = tmp_path / "funding.csv"
    table.write_text("timestamp,funding_rate\n1970-01-01T16:00:00Z,-0.001\n")
    x = PerpetualExchange([rules()], D(1000), funding_rate=D("0.0001"), funding_rates={S: load_funding_rates(table)})
    x.match(S, candle(0, 100), 0)
    ok(x.create_limit_order(S, Side.BUY, D(2), D(100), "long", 0))
    for hour in range(1, 17):
        x.match(S, candle(hour, 100 + hour), hour)
    # 08:00 at the 108 open: pays 2 * 108 * 0.0001; 16:00 at 116: receives 2 * 116 * 0.001.
    assert [e.amount for e in x.income if e.income_type == "FUNDING_FEE"] == [D("-0.02160"), D("0.232")]
    assert x.position(S).funding == D("0.21040")


def test_a_bad_funding_table_names_its_row(tmp_path):
    table = tmp_path / "funding.csv"
    table.write_text("timestamp,funding_rate\n1970-01-01T08:00:00Z,abc\n")
    with pytest.raises(ValueError, match=r"funding.csv:2: .*funding_rate"):
        load_funding_rates(table)


def test_an_isolated_position_is_liquidated_at_its_price_and_loses_its_whole_margin():
    x = engine()
    ok(x.set_margin_mode(S, "isolated"))
    ok(x.set_leverage(S, 10))
    ok(x.create_limit_order(S, Side.BUY, D(1), D(100), "long", 1))
    fee = x.position(S).fees
    ok(x.create_limit_order(S, Side.SELL, D(1), D(120), "tp", 1, reduce_only=True))
    liquidation = x.liquidation_price(S)
    assert liquidation == (D(100) - 10) / (1 - D("0.004"))  # margin 10 = 100 - P + 0.004 * P
    x.match(S, candle(1, 95, l=91), 2)
    assert x.position(S).size == 1
    x.match(S, candle(2, 92, l=85), 3)
    pos = x.position(S)
    assert pos.size == 0 and pos.isolated_wallet == 0 and x.trades[-1].liquidation
    assert x.wallet == D(1000) - fee - 10
    # Filled at the liquidation price, the position still had margin left (its maintenance
    # margin, about): that residue goes to the insurance fund, as Binance's does.
    [forced] = [t for t in x.trades if t.liquidation]
    [clear] = [i for i in x.income if i.income_type == "INSURANCE_CLEAR"]
    assert forced.price == x.markets[S].round_price(liquidation, True) and forced.realized_pnl > -10
    assert clear.amount == -(10 + forced.realized_pnl) < 0
    assert x.orders["2"].status == "canceled"  # its orders went with it


def test_a_cross_liquidation_never_leaves_the_wallet_below_zero():
    x = engine(wallet="11")
    ok(x.create_limit_order(S, Side.BUY, D(2), D(100), "long", 1))  # 200 at 20x on 11 USDT
    x.match(S, candle(1, 80, l=70), 2)  # gapped far beyond the liquidation price
    assert x.position(S).size == 0 and x.wallet == 0


# ------------------------------------------------------- operator, refusals


def test_an_operator_closes_or_reduces_at_the_mark_as_a_taker():
    x = engine()
    ok(x.create_limit_order(S, Side.BUY, D(3), D(100), "long", 1))
    x.match(S, candle(1, 100, c=104), 2)
    ok(x.operator_reduce(S, D(1), 3))
    assert x.position(S).size == 2 and x.trades[-1].price == D(104) and not x.trades[-1].maker
    ok(x.operator_reduce(S, None, 4))
    assert x.position(S).size == 0 and x.position(S).realized_pnl == D(12)
    assert code(x.operator_reduce(S, None, 5)) == CODE_REDUCE_ONLY_REJECTED


def test_an_operators_close_is_priced_on_the_tick_whatever_the_mark():
    # The bundled candles are in cents; the market's tick is 0.1: a price at the mark would
    # be refused (-4014). A sell rounds down and a buy up, so it still takes at once.
    x = engine()
    ok(x.create_limit_order(S, Side.BUY, D(3), D(101), "long", 1))
    x.match(S, candle(1, 100, c="100.37"), 2)
    ok(x.operator_reduce(S, D("0.04"), 3))
    assert x.position(S).size == D("2.96") and x.trades[-1].price == D("100.3") and not x.trades[-1].maker
    ok(x.create_limit_order(S, Side.SELL, D(6), D(100), "flip", 4))
    x.match(S, candle(2, 100, c="100.33"), 5)
    assert x.position(S).size == D("-3.04")
    ok(x.operator_reduce(S, None, 6))
    assert x.position(S).size == 0 and x.trades[-1].price == D("100.4")


def test_market_orders_of_any_kind_are_refused_and_recorded():
    x = engine()
    for kind in ("MARKET", "STOP_MARKET", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"):
        assert code(x.refuse_market_order(kind, S, "{}", 1)) == CODE_INVALID_ORDER_TYPE
    assert [v.order_type for v in x.violations] == ["MARKET", "STOP_MARKET", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"]
    assert x.orders == {} and x.trades == []


# --------------------------------------------------------- the state machine


class PerpetualsMachine(RuleBasedStateMachine):
    """Random orders, candles, funding and operator actions; the books always reconcile."""

    @initialize(wallet=st.integers(50, 5000))
    def start(self, wallet):
        self.wallet = D(wallet)
        self.x = self._new()
        #: The same account, never restarted: every action reaches both.
        self.twin = self._new()
        self.price = D(100)
        self.hour = 0
        self.ids = 0

    def _new(self) -> PerpetualExchange:
        x = PerpetualExchange([rules()], self.wallet, funding_interval=2 * HOUR, maintenance_margin_rate=D("0.01"))
        x.match(S, candle(0, 100), 0)
        return x

    def _both(self, action):
        action(self.twin)
        return action(self.x)

    @rule()
    def restart(self):
        """The engine stops and a new one continues from its snapshot (shadow mode's restart)."""
        restored = PerpetualExchange([rules()], D(1), funding_interval=2 * HOUR, maintenance_margin_rate=D("0.01"))
        restored.restore(self.x.snapshot())
        self.x = restored

    def _id(self) -> str:
        self.ids += 1
        return f"c{self.ids}"

    @rule(side=st.sampled_from(Side), offset=st.integers(-30, 30), qty=st.integers(1, 3000),
          reduce_only=st.booleans(), post_only=st.booleans())
    def limit(self, side, offset, qty, reduce_only, post_only):
        price = self.price + D(offset) / 10
        if price <= 0:
            return
        taker_before, available = len(self.x.trades), self.x.available_margin()
        cid = self._id()
        result = self._both(lambda x: x.create_limit_order(S, side, D(qty) / 1000, price, cid, self.hour, post_only=post_only, reduce_only=reduce_only))
        if not isinstance(result, Rejection) and len(self.x.trades) == taker_before:
            # An accepted order never overdraws the margin (one that opens nothing holds none).
            assert self.x.available_margin() >= 0 or self.x.available_margin() == available

    @rule(side=st.sampled_from(Side), kind=st.sampled_from(["STOP", "TAKE_PROFIT"]), trigger=st.integers(1, 30),
          limit=st.integers(-10, 10), qty=st.integers(1, 3000), reduce_only=st.booleans())
    def conditional(self, side, kind, trigger, limit, qty, reduce_only):
        rising = (side is Side.BUY) == (kind == "STOP")
        trigger_price = self.price + (D(trigger) if rising else -D(trigger)) / 2
        price = trigger_price + D(limit) / 2
        if price > 0 and trigger_price > 0:
            cid = self._id()
            self._both(lambda x: x.create_conditional_order(S, side, kind, D(qty) / 1000, price, trigger_price, cid, self.hour,
                                                            reduce_only=reduce_only))

    @precondition(lambda self: self.x.open_orders() or self.x.open_conditional_orders())
    @rule(data=st.data())
    def cancel(self, data):
        choices = [("o", o.exchange_order_id) for o in self.x.open_orders()] + [("a", a.algo_id) for a in self.x.open_conditional_orders()]
        kind, ident = data.draw(st.sampled_from(choices))
        if kind == "o":
            ok(self._both(lambda x: x.cancel_order(exchange_order_id=ident)))
        else:
            ok(self._both(lambda x: x.cancel_conditional_order(algo_id=ident)))

    @rule(gap=st.integers(-40, 40), up=st.integers(0, 60), down=st.integers(0, 60), close=st.integers(-60, 60),
          volume=st.integers(0, 5000))
    def candle(self, gap, up, down, close, volume):
        self.hour += 1
        o = max(self.price + D(gap) / 2, D(1))
        c = min(max(o + D(close) / 2, o - D(down) / 2, D(1)), o + D(up) / 2)
        h = max(o, c, o + D(up) / 2)
        lo = max(min(o, c, o - D(down) / 2), D("0.5"))
        bar = Candle(self.hour * HOUR, o, h, lo, c, D(volume) / 100)
        for trade in self._both(lambda x: x.match(S, bar, self.hour)):
            event("liquidation" if trade.liquidation else "a fill on a candle")
        self.price = c

    @rule(fraction=st.sampled_from([None, D("0.5")]))
    def operator_reduce(self, fraction):
        size = abs(self.x.position(S).size)
        amount = None if fraction is None else (size * fraction).quantize(D("0.001"))
        self._both(lambda x: x.operator_reduce(S, amount if amount else None, self.hour))

    @rule(delta=st.integers(-500, 500))
    def transfer(self, delta):
        self._both(lambda x: x.transfer(D(delta), self.hour))

    @rule(leverage=st.integers(1, 50))
    def leverage(self, leverage):
        self._both(lambda x: x.set_leverage(S, leverage, self.hour))

    @rule(mode=st.sampled_from(["cross", "isolated"]))
    def margin_mode(self, mode):
        self._both(lambda x: x.set_margin_mode(S, mode, self.hour))

    @invariant()
    def a_restarted_engine_is_the_engine_that_never_stopped(self):
        assert self.x.snapshot() == self.twin.snapshot()

    @invariant()
    def wallet_is_the_sum_of_its_income(self):
        x = self.x
        assert x.wallet == x.initial_wallet + sum((e.amount for e in x.income), D(0))
        pos = x.position(S)
        transfers = sum((e.amount for e in x.income if e.income_type in ("TRANSFER", "INSURANCE_CLEAR")), D(0))
        assert pos.realized_pnl - pos.fees + pos.funding + transfers == x.wallet - x.initial_wallet

    @invariant()
    def the_position_is_the_sum_of_its_trades_and_reduce_only_never_increases_it(self):
        size = D(0)
        for trade in self.x.trades:
            before = size
            size += trade.amount if trade.side is Side.BUY else -trade.amount
            assert size == trade.position_after
            if trade.reduce_only:
                assert abs(size) < abs(before) and (size == 0 or (size > 0) == (before > 0))
        assert size == self.x.position(S).size

    @invariant()
    def margin_is_never_negative(self):
        x = self.x
        assert all(o.margin >= 0 for o in x.open_orders())
        assert x.position(S).isolated_wallet >= 0
        assert x.wallet >= 0 or x.position(S).size  # a flat account never owes

    @invariant()
    def open_means_open(self):
        assert all(o.status == "open" and o.remaining > 0 for o in self.x.open_orders())
        assert all(o.filled <= o.amount for o in self.x.orders.values())


TestPerpetualsMachine = PerpetualsMachine.TestCase
TestPerpetualsMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
