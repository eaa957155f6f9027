"""A config's venues as the Lab simulates them: the market rules, opening balances, volume
share and replay data each strategy's venue gives it, so ``limitline lab`` trades by the
rules ``limitline run`` trades by in shadow mode.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Sequence

from actors.strategy.settings import StrategySettings
from exchange.markets import MarketRules
from supervisors.config import Config, MarketConfig, SimulatedVenueConfig, data_path
from supervisors.lab import LabVenue


def market_rules(m: MarketConfig) -> MarketRules:
    """A configured market's rules (as shadow mode's simulated exchange has them)."""
    return MarketRules.for_symbol(
        m.symbol, tick_size=m.tick_size, lot_size=m.lot_size, min_amount=m.min_amount, min_notional=m.min_notional,
        maker_fee=m.maker_fee, taker_fee=m.taker_fee, fee_in=m.fee_in, fee_currency_price=m.fee_currency_price,
    )


def lab_market(config: Config, settings: StrategySettings) -> tuple[MarketRules, str | None]:
    """The market rules and default data for a strategy in the Lab: its simulated venue's,
    or (for an exchange venue, whose rules live on the exchange) the sandbox's defaults."""
    from exchange.sandbox import default_rules

    venue = config.venue(settings.venue)
    if isinstance(venue, SimulatedVenueConfig):
        m = next((m for m in venue.markets if m.symbol == settings.symbol), None)
        if m is not None:
            replay = venue.replay.get(settings.symbol)
            return market_rules(m), str(data_path(replay.data)) if replay else None
    return default_rules(settings.symbol), None


def lab_venues(config: Config, strategies: Sequence[StrategySettings]) -> list[LabVenue]:
    """The venues ``strategies`` trade on. A simulated venue as configured: its markets, its
    opening balances and its volume share, as shadow mode runs it. An exchange venue (whose
    rules and balances live on the exchange): the sandbox's rules for the strategies'
    markets, a balance that is the sum of their allocations, a volume share of 0.1."""
    venues: list[LabVenue] = []
    for name in dict.fromkeys(s.venue for s in strategies):
        venue = config.venue(name)
        trading = [s for s in strategies if s.venue == name]
        if isinstance(venue, SimulatedVenueConfig):
            venues.append(LabVenue(name, tuple(market_rules(m) for m in venue.markets), dict(venue.balances),
                                   venue.volume_share))
            continue
        markets = {s.symbol: lab_market(config, s)[0] for s in trading}
        balances: dict[str, Decimal] = {}
        for s in trading:
            market = markets[s.symbol]
            balances[market.quote] = balances.get(market.quote, Decimal(0)) + s.allocation.quote
            balances[market.base] = balances.get(market.base, Decimal(0)) + s.allocation.base
        venues.append(LabVenue(name, tuple(markets.values()), balances))
    return venues
