"""How amounts and times are written for a person on the terminal (``limitline status``
and the run's console lines). Display only: the endpoints and the event log carry every
digit; every time here is UTC and says so."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any


def clock(at: float) -> str:
    """A Unix time as ``19:50:03 UTC``."""
    return datetime.fromtimestamp(at, tz=timezone.utc).strftime("%H:%M:%S UTC")


def utc(at: float | None) -> str:
    """A Unix time as ``2026-12-07 19:50:03 UTC``; ``-`` for none."""
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def amount(value: Any, places: int = 8, trim: bool = True) -> str:
    """Decimal text rounded to ``places`` decimals (half to even), trailing zeros dropped
    unless ``trim`` is False; ``-`` for none. Display only: the store and the ledger keep every digit."""
    if value is None:
        return "-"
    try:
        number = Decimal(str(value))
        if not number.is_finite():
            return str(number)
        text = format(number.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN), "f")
    except InvalidOperation:  # not a number, or too many digits to round: shown as given
        return str(value)
    if trim and "." in text:
        text = text.rstrip("0").rstrip(".")
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text


def money(value: Any, currency: str) -> str:
    """An amount of ``currency``, with it: ``12.87 USD``; two decimals for the usual quote
    currencies, up to eight for the others (``0.00019463 BTC``)."""
    if value is None:
        return "-"
    if currency.upper() in FIAT_LIKE:
        return f"{amount(value, 2, trim=False)} {currency}"
    return f"{amount(value, 8)} {currency}"


#: Quote currencies whose amounts read best with two decimals.
FIAT_LIKE = frozenset({"USD", "USDT", "USDC", "BUSD", "FDUSD", "TUSD", "DAI", "EUR", "GBP", "JPY", "TRY", "BRL", "AUD"})


def per_currency(amounts: dict[str, Any]) -> str:
    """``{"USD": "2.5", "BTC": "0.001"}`` as ``2.50 USD, 0.001 BTC``; ``-`` for none."""
    return ", ".join(money(value, currency) for currency, value in amounts.items()) or "-"


