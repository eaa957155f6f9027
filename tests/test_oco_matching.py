"""The simulated spot exchange's OCO order lists (Binance's ``orderList/oco``), plain calls."""

from __future__ import annotations

from decimal import Decimal as D

from exchange.candles import Candle
from exchange.markets import MarketRules
from exchange.matching import Rejection, SimulatedExchange
from exchange.records import Side

MARKET = MarketRules.for_symbol(
    "BTC/USD", tick_size=D("0.01"), lot_size=D("0.001"), min_amount=D("0.001"), min_notional=D("10"),
    maker_fee=D("0.001"), taker_fee=D("0.002"),
)


def bar(open_, high, low, close, volume="100", ts=0) -> Candle:
    return Candle(ts, D(open_), D(high), D(low), D(close), D(volume))


def exchange_at(last="100", btc="1") -> SimulatedExchange:
    ex = SimulatedExchange([MARKET], {"USD": D("1000"), "BTC": D(btc)}, volume_share=D("0.5"))
    ex.observe("BTC/USD", bar(last, last, last, last))
    return ex


def oco(ex: SimulatedExchange, amount="1", tp="110", stop="95", limit="94", name="L"):
    return ex.create_oco_sell("BTC/USD", D(amount), D(tp), D(stop), D(limit), name, name + "-tp", name + "-sl", 0)


def test_the_list_locks_the_coins_once_and_a_cancel_gives_them_back():
    ex = exchange_at(btc="1")
    above, below = oco(ex)
    assert ex.balances["BTC"].free == 0 and ex.balances["BTC"].used == D("1")  # once, not twice
    assert above.locked + below.locked == D("1")
    # A second sell of the same coins finds nothing free.
    assert isinstance(ex.create_limit_order("BTC/USD", Side.SELL, D("0.5"), D("120"), "x", 0), Rejection)
    assert isinstance(oco(ex, name="M"), Rejection)
    legs = ex.cancel_order_list("L")
    assert [leg.status for leg in legs] == ["canceled", "canceled"]
    assert ex.balances["BTC"].free == D("1") and ex.balances["BTC"].used == 0


def test_cancelling_one_leg_cancels_the_list():
    ex = exchange_at()
    oco(ex)
    ex.cancel_order("L-sl")
    assert [leg.status for leg in ex.order_list("L")] == ["canceled", "canceled"]
    assert ex.balances["BTC"].free == D("1")


def test_prices_must_straddle_the_last_trade():
    ex = exchange_at(last="100")
    rejection = oco(ex, tp="99", stop="95", limit="94")
    assert isinstance(rejection, Rejection) and rejection.code == -2010 and "relationship" in rejection.message
    assert isinstance(oco(ex, tp="110", stop="101", limit="100"), Rejection)
    assert ex.balances["BTC"].free == D("1") and not ex.open_orders()


def test_the_take_profit_filling_in_part_ends_the_stop_and_keeps_the_lock():
    ex = exchange_at()
    oco(ex)
    [fill] = ex.match("BTC/USD", bar("100", "111", "99", "110", volume="1"), 1)  # half of 1 BTC
    assert fill.client_order_id == "L-tp" and fill.amount == D("0.5") and fill.price == D("110")
    above, below = ex.order_list("L")
    assert below.status == "expired" and above.status == "open"
    assert ex.balances["BTC"].used == D("0.5") == above.locked  # the rest still sells once
    # The stop does not come back: the market falling through it now sells nothing more.
    assert [f.client_order_id for f in ex.match("BTC/USD", bar("100", "111", "90", "100"), 2)] == ["L-tp"]
    assert ex.balances["BTC"].used == 0 and ex.balances["BTC"].free == 0
    assert ex.balances["USD"].free == D("1000") + D("110") * (1 - D("0.001"))


def test_the_stop_triggers_on_the_range_takes_what_crosses_and_cancels_the_take_profit():
    ex = exchange_at()
    oco(ex)
    assert ex.fill_thresholds("BTC/USD") == (D("95"), D("110"))  # the stop waits on the lows
    # The candle trades down to 93: the stop fires at 95, its limit 94 crosses 95: a taker at 95.
    [fill] = ex.match("BTC/USD", bar("99", "99", "93", "94"), 1)
    assert fill.client_order_id == "L-sl" and fill.price == D("95") and fill.taker_or_maker == "taker"
    assert fill.amount == D("1") and fill.order_complete
    above, below = ex.order_list("L")
    assert above.status == "expired" and below.status == "closed" and below.triggered
    assert ex.balances["BTC"].used == 0 and ex.balances["BTC"].free == 0


def test_a_gapped_stop_rests_unfilled_below_the_market():
    ex = exchange_at()
    oco(ex)
    # Opened at 90, below the stop's limit (94): it triggers at the open and rests at 94.
    assert ex.match("BTC/USD", bar("90", "92", "89", "91"), 1) == []
    above, below = ex.order_list("L")
    assert below.triggered and below.status == "open" and above.status == "open"
    assert ex.fill_thresholds("BTC/USD") == (None, D("94"))
    assert ex.match("BTC/USD", bar("91", "93", "90", "92"), 2) == []  # still below its limit
    [fill] = ex.match("BTC/USD", bar("92", "95", "91", "94"), 3)  # trades through 94: a maker
    assert fill.client_order_id == "L-sl" and fill.price == D("94") and fill.taker_or_maker == "maker"
    assert ex.order_list("L")[0].status == "expired"


def test_the_list_survives_a_restart_through_its_state():
    ex = exchange_at()
    ex.track_changes = True
    oco(ex)
    ex.match("BTC/USD", bar("90", "92", "89", "91"), 1)  # triggered, resting
    state = ex.drain_changes()
    assert state is not None
    again = SimulatedExchange([MARKET], {}, volume_share=D("0.5"))
    again.restore(state)
    above, below = again.order_list("L")
    assert below.triggered and below.stop_price == D("95") and above.list_client_id == "L"
    again.cancel_order_list("L")
    assert again.balances["BTC"].free == D("1")
