"""The simulated exchange's matching rules, with plain calls."""

from __future__ import annotations

from decimal import Decimal as D

import attrs
import pytest

from exchange.candles import Candle
from exchange.markets import MarketRules
from exchange.matching import Rejection, SimulatedExchange
from exchange.records import Side

MARKET = MarketRules.for_symbol(
    "BTC/USD",
    tick_size=D("0.01"),
    lot_size=D("0.001"),
    min_amount=D("0.001"),
    min_notional=D("10"),
    maker_fee=D("0.001"),
    taker_fee=D("0.002"),
)


def exchange(usd="10000", btc="1", share="0.5") -> SimulatedExchange:
    return SimulatedExchange([MARKET], {"USD": D(usd), "BTC": D(btc)}, volume_share=D(share))


def candle(low, high, volume="100") -> Candle:
    return Candle(0, D(high), D(high), D(low), D(low), D(volume))


def test_a_buy_fills_only_when_the_market_trades_below_its_price():
    ex = exchange()
    ex.create_limit_order("BTC/USD", Side.BUY, D("1"), D("100"), "c1", 0)
    assert ex.match("BTC/USD", candle("100", "110"), 1) == []  # touching is not enough
    [fill] = ex.match("BTC/USD", candle("99.99", "110"), 2)
    assert fill.price == D("100") and fill.amount == D("1") and fill.order_complete
    # As on Binance spot, a buy pays its fee in the coin it receives.
    assert fill.fee == D("0.001") and fill.fee_currency == "BTC"
    assert ex.balances["USD"].free == D("10000") - D("100")  # the reserved worst-case fee came back
    assert ex.balances["USD"].used == 0
    assert ex.balances["BTC"].free == D("2") - D("0.001")


def test_fees_in_the_quote_asset_or_a_third_currency_while_it_lasts():
    quote_fees = SimulatedExchange([attrs.evolve(MARKET, fee_in="quote")], {"USD": D("10000")})
    quote_fees.create_limit_order("BTC/USD", Side.BUY, D("1"), D("100"), "q", 0)
    [fill] = quote_fees.match("BTC/USD", candle("99", "110"), 1)
    assert (fill.fee, fill.fee_currency) == (D("0.1"), "USD")
    assert quote_fees.balances["USD"].free == D("10000") - D("100.1")
    # BNB at 50 USD: a 0.1 USD fee is 0.002 BNB, taken from the BNB balance while it lasts.
    bnb = SimulatedExchange([attrs.evolve(MARKET, fee_in="BNB", fee_currency_price=D("50"))],
                            {"USD": D("10000"), "BNB": D("0.003")}, volume_share=D("1"))
    bnb.create_limit_order("BTC/USD", Side.BUY, D("1"), D("100"), "b1", 0)
    bnb.create_limit_order("BTC/USD", Side.BUY, D("1"), D("100"), "b2", 0)
    first, second = bnb.match("BTC/USD", candle("99", "110"), 1)
    assert (first.fee, first.fee_currency) == (D("0.002"), "BNB")
    assert (second.fee, second.fee_currency) == (D("0.001"), "BTC")  # BNB ran out: the usual fee
    assert bnb.balances["BNB"].free == D("0.001") and bnb.balances["BTC"].free == D("1.999")


def test_a_sell_fills_only_when_the_market_trades_above_its_price():
    ex = exchange()
    ex.create_limit_order("BTC/USD", Side.SELL, D("0.5"), D("200"), "s1", 0)
    assert ex.match("BTC/USD", candle("150", "200"), 1) == []
    [fill] = ex.match("BTC/USD", candle("150", "200.01"), 2)
    assert fill.amount == D("0.5")
    assert ex.balances["USD"].free == D("10000") + D("100") - D("0.1")
    assert ex.balances["BTC"].free + ex.balances["BTC"].used == D("0.5")


def test_partial_fills_are_capped_by_the_share_of_traded_volume_best_price_first():
    ex = exchange(share="0.1")
    ex.create_limit_order("BTC/USD", Side.BUY, D("3"), D("100"), "low", 0)
    ex.create_limit_order("BTC/USD", Side.BUY, D("3"), D("101"), "high", 0)
    fills = ex.match("BTC/USD", candle("90", "95", volume="40"), 1)  # 4 BTC can fill
    assert [(f.client_order_id, f.amount, f.order_complete) for f in fills] == [
        ("high", D("3"), True),
        ("low", D("1"), False),
    ]
    assert ex.order_by_client_id("low").remaining == D("2")
    assert ex.match("BTC/USD", candle("90", "95", volume="0"), 2) == []  # no volume, no fill


def closing(close, volume="100") -> Candle:
    return Candle(0, D(close), D(close), D(close), D(close), D(volume))


def test_a_crossing_limit_fills_at_once_as_a_taker_and_a_resting_one_later_as_a_maker():
    ex = exchange(share="0.5")
    ex.match("BTC/USD", closing("100"), 0)  # the last trade: 100
    # A buy above the last trade crosses: it takes at once, at the last trade's price,
    # paying the taker fee (0.2 %; in the coin received, as on Binance spot).
    ex.create_limit_order("BTC/USD", Side.BUY, D("1"), D("100.10"), "cross", 1)
    [taken] = ex.trades_of(ex.order_by_client_id("cross").exchange_order_id)
    assert (taken.price, taken.amount, taken.taker_or_maker) == (D("100"), D("1"), "taker")
    assert (taken.fee, taken.fee_currency) == (D("0.002"), "BTC") and taken.order_complete
    assert ex.balances["USD"].free == D("10000") - D("100") and ex.balances["USD"].used == 0
    # A buy at the last trade or below rests; the market trading through it later fills it
    # at its own price, paying the maker fee (0.1 %).
    ex.create_limit_order("BTC/USD", Side.BUY, D("1"), D("100"), "rest", 2)
    assert ex.trades_of(ex.order_by_client_id("rest").exchange_order_id) == []
    [made] = ex.match("BTC/USD", candle("99", "101"), 3)
    assert (made.price, made.fee, made.taker_or_maker) == (D("100"), D("0.001"), "maker")
    # A sell below the last trade (now 99: the candle's close) crosses too.
    ex.create_limit_order("BTC/USD", Side.SELL, D("0.5"), D("98"), "sell", 4)
    [sold] = ex.trades_of(ex.order_by_client_id("sell").exchange_order_id)
    assert (sold.price, sold.fee, sold.fee_currency, sold.taker_or_maker) == (D("99"), D("0.099"), "USD", "taker")


def test_a_crossing_order_takes_at_most_the_share_of_the_last_volume_and_the_rest_rests():
    ex = exchange(share="0.1")
    ex.match("BTC/USD", closing("100", volume="15"), 0)  # 1.5 BTC may be taken until the next candle
    ex.create_limit_order("BTC/USD", Side.BUY, D("1"), D("101"), "a", 1)
    ex.create_limit_order("BTC/USD", Side.BUY, D("1"), D("101"), "b", 1)
    [a] = ex.trades_of(ex.order_by_client_id("a").exchange_order_id)
    [b] = ex.trades_of(ex.order_by_client_id("b").exchange_order_id)
    assert (a.amount, b.amount, b.order_complete) == (D("1"), D("0.5"), False)
    assert ex.order_by_client_id("b").status == "open"  # the rest rests at its own price
    [rest] = ex.match("BTC/USD", candle("100.5", "102"), 2)
    assert (rest.client_order_id, rest.price, rest.amount, rest.taker_or_maker) == ("b", D("101"), D("0.5"), "maker")
    assert ex.balances["USD"].used == 0
    # Before any candle of the market, nothing crosses; a zero-volume candle leaves nothing to take.
    fresh = exchange()
    fresh.create_limit_order("BTC/USD", Side.BUY, D("1"), D("500"), "x", 0)
    assert fresh.trades == [] and fresh.order_by_client_id("x").status == "open"
    fresh.match("BTC/USD", closing("100", volume="0"), 1)
    fresh.create_limit_order("BTC/USD", Side.BUY, D("1"), D("500"), "y", 2)
    assert fresh.trades == []


def test_a_post_only_order_that_would_cross_is_rejected_and_one_that_rests_is_placed():
    ex = exchange()
    ex.match("BTC/USD", closing("100"), 0)
    crossing = ex.create_limit_order("BTC/USD", Side.BUY, D("1"), D("100.01"), "m1", 1, post_only=True)
    assert isinstance(crossing, Rejection) and crossing.code == -2010
    assert crossing.message == "Order would immediately match and take."  # Binance's LIMIT_MAKER answer
    assert ex.balances["USD"].used == 0
    resting = ex.create_limit_order("BTC/USD", Side.BUY, D("1"), D("100"), "m2", 1, post_only=True)
    assert resting.status == "open" and ex.trades == []


def test_a_buy_locks_the_worst_fee_it_may_pay():
    ex = exchange(usd="100.15")  # 1 BTC at 100 with the maker fee fits; with the taker fee it does not
    result = ex.create_limit_order("BTC/USD", Side.BUY, D("1"), D("100"), "x", 0)
    assert isinstance(result, Rejection) and "insufficient balance" in result.message


@pytest.mark.parametrize(
    "amount, price, message",
    [
        ("1", "100.005", "Filter failure: PRICE_FILTER"),
        ("0.0005", "100000", "Filter failure: LOT_SIZE"),
        ("1.0005", "100", "Filter failure: LOT_SIZE"),
        ("0.001", "100", "Filter failure: NOTIONAL"),
    ],
)
def test_market_rules_reject_like_the_exchange(amount, price, message):
    result = exchange().create_limit_order("BTC/USD", Side.BUY, D(amount), D(price), "x", 0)
    assert isinstance(result, Rejection) and result.code == -1013
    assert result.message.startswith(message)


def test_insufficient_balance_and_duplicates_are_rejected():
    ex = exchange(usd="50")
    result = ex.create_limit_order("BTC/USD", Side.BUY, D("1"), D("100"), "x", 0)
    assert isinstance(result, Rejection) and result.code == -2010 and "insufficient balance" in result.message
    ex.create_limit_order("BTC/USD", Side.SELL, D("0.5"), D("100"), "s", 0)
    dup = ex.create_limit_order("BTC/USD", Side.SELL, D("0.5"), D("100"), "s", 0)
    assert isinstance(dup, Rejection) and dup.message == "Duplicate order sent."


def test_cancel_unlocks_what_is_left_and_a_second_cancel_is_unknown():
    ex = exchange(share="0.01")
    ex.create_limit_order("BTC/USD", Side.BUY, D("2"), D("100"), "c", 0)
    ex.match("BTC/USD", candle("90", "95", volume="100"), 1)  # fills 1 of 2
    ended = ex.cancel_order("c")
    assert ended.filled == D("1")  # what the exchange says had filled when it ended the order
    assert ex.balances["USD"].used == 0
    assert ex.balances["USD"].free == D("10000") - D("100")
    again = ex.cancel_order("c")
    assert isinstance(again, Rejection) and again.code == -2011


# ----------------------------------------------- precision as ccxt counts it

from ccxt.base.decimal_to_precision import (  # noqa: E402
    NO_PADDING,
    SIGNIFICANT_DIGITS,
    TICK_SIZE,
    TRUNCATE,
    decimal_to_precision,
)
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from exchange.ccxt_adapter import parse_markets  # noqa: E402


def ccxt_market(price, amount):
    return {"X/USD": {"spot": True, "type": "spot", "active": True, "maker": 0.001, "taker": 0.002,
                      "precision": {"price": price, "amount": amount}, "limits": {"amount": {"min": None}, "cost": {"min": 1}}}}


def test_each_ccxt_precision_mode_gives_usable_ticks_and_lots():
    import ccxt

    by_tick = parse_markets(ccxt_market(0.01, 0.0001), ccxt.TICK_SIZE)["X/USD"]
    by_places = parse_markets(ccxt_market(2, 4), ccxt.DECIMAL_PLACES)["X/USD"]
    assert (by_tick.tick_size, by_tick.lot_size) == (by_places.tick_size, by_places.lot_size) == (D("0.01"), D("0.0001"))
    # bitfinex counts significant digits: 5 for BTC/USD prices, 8 for amounts. Today's
    # 5 BTC ticks (every buy rounding to zero) are gone.
    digits = parse_markets(ccxt_market(5, 8), ccxt.SIGNIFICANT_DIGITS)["X/USD"]
    assert digits.round_price(D("43251.789"), passive_side_is_down=True) == D("43251")
    assert digits.round_price(D("0.123456"), passive_side_is_down=False) == D("0.12346")
    assert digits.round_amount(D("0.0123456789")) == D("0.012345678")
    assert digits.violation(D("43251"), D("0.012345678")) is None
    assert "PRICE_FILTER" in digits.violation(D("43251.5"), D("0.01"))


@given(value=st.decimals("0.00000001", "1000000", places=8), digits=st.integers(1, 10))
def test_significant_digits_round_down_exactly_like_ccxt(value, digits):
    rules = parse_markets(ccxt_market(digits, digits), 3)["X/USD"]  # 3: ccxt.SIGNIFICANT_DIGITS
    ours = rules.round_amount(value)
    theirs = D(decimal_to_precision(str(value), TRUNCATE, digits, SIGNIFICANT_DIGITS, NO_PADDING))
    assert ours == theirs


@given(value=st.decimals("0.00000001", "1000000", places=8), exponent=st.integers(-8, 2))
def test_steps_round_down_exactly_like_ccxt(value, exponent):
    step = D(1).scaleb(exponent)
    rules = parse_markets(ccxt_market(str(step), str(step)), 4)["X/USD"]  # 4: ccxt.TICK_SIZE
    ours = rules.round_amount(value)
    theirs = D(decimal_to_precision(str(value), TRUNCATE, str(step), TICK_SIZE, NO_PADDING))
    assert ours == theirs
