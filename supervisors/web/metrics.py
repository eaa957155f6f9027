"""``/metrics``: Prometheus' text format through ``prometheus_client``.

One custom collector reads the runtime's state at scrape time: the supervision tree's
snapshot (what every actor reports), the counts the store groups (orders by state, fills,
denials) and the connections' exchange-call statistics. Nothing in the actors counts for
Prometheus; no counter is kept twice.

Money leaves as floats here, and only here: Prometheus has no other number type. The
exact amounts are in ``/status/strategies``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from actors.connection.call_stats import CallStats
from supervisors.web.views import StrategyFacts, index, venue_rows, walk

BREAKER_STATES = ("closed", "open", "half_open")


class RuntimeCollector(Collector):
    """The metrics of one scrape. ``tree``: the supervision tree's snapshot; ``counts``:
    :func:`supervisors.web.queries.metric_counts`; ``call_stats``: per venue."""

    def __init__(
        self,
        tree: dict[str, Any],
        counts: dict[str, Any],
        strategies: list[StrategyFacts],
        venues: list[str],
        call_stats: dict[str, CallStats],
    ) -> None:
        self.tree, self.counts, self.strategies, self.venues, self.call_stats = tree, counts, strategies, venues, call_stats

    def collect(self) -> Iterator[Metric]:
        nodes = index(self.tree)
        yield from self._orders()
        yield from self._money(nodes)
        yield from self._strategies(nodes)
        yield from self._venues(nodes)
        yield from self._supervision()
        yield from self._calls()

    def _orders(self) -> Iterable[Metric]:
        orders = GaugeMetricFamily("limitline_orders", "Orders in the order book of record, by strategy and state.",
                                   labels=["strategy", "state"])
        for strategy, state, count in self.counts["orders"]:
            orders.add_metric([strategy, state], count)
        fills = CounterMetricFamily("limitline_fills", "Fills recorded, by strategy.", labels=["strategy"])
        for strategy, count in self.counts["fills"]:
            fills.add_metric([strategy], count)
        denied = CounterMetricFamily("limitline_reservations_denied",
                                     "Reservations the ledger denied, by strategy and reason.", labels=["strategy", "reason"])
        for (strategy, reason), count in sorted(self.counts["denied"].items()):
            denied.add_metric([strategy, reason], count)
        return [orders, fills, denied]

    def _money(self, nodes: dict[str, Any]) -> Iterable[Metric]:
        accounts = nodes.get("ledger", {}).get("status", {}).get("accounts", {})
        realized = GaugeMetricFamily("limitline_realized_pnl", "Realized P&L per strategy, in its quote currency "
                                     "(average cost, fees in quote and base included).", labels=["strategy", "currency"])
        fees = GaugeMetricFamily("limitline_fees_paid", "Fees paid per strategy, in the currency charged.",
                                 labels=["strategy", "currency"])
        for facts in self.strategies:
            account = accounts.get(facts.name)
            if account is None:
                continue
            realized.add_metric([facts.name, facts.quote], float(Decimal(account["realized_pnl"])))
            for currency, amount in sorted(account.get("fees_paid", {}).items()):
                fees.add_metric([facts.name, currency], float(Decimal(amount)))
        return [realized, fees]

    def _strategies(self, nodes: dict[str, Any]) -> Iterable[Metric]:
        breaker = GaugeMetricFamily("limitline_breaker_state", "The strategy's circuit breaker: 1 for its current state.",
                                    labels=["strategy", "state"])
        active = GaugeMetricFamily("limitline_strategy_active", "1 when the strategy may place orders.", labels=["strategy"])
        paused = GaugeMetricFamily("limitline_strategy_paused", "1 when paused until an operator resumes it.",
                                   labels=["strategy"])
        for facts in self.strategies:
            status = nodes.get(f"strategy:{facts.name}", {}).get("status", {})
            current = (status.get("breaker") or {}).get("state")
            for state in BREAKER_STATES:
                breaker.add_metric([facts.name, state], 1.0 if state == current else 0.0)
            active.add_metric([facts.name], 1.0 if status.get("active") else 0.0)
            paused.add_metric([facts.name], 1.0 if status.get("paused") else 0.0)
        return [breaker, active, paused]

    def _venues(self, nodes: dict[str, Any]) -> Iterable[Metric]:
        isolated = GaugeMetricFamily("limitline_venue_isolated", "1 when the venue is isolated.", labels=["venue"])
        reconciled = GaugeMetricFamily("limitline_venue_reconciled", "1 once the venue's state was compared with the exchange.",
                                       labels=["venue"])
        for venue in venue_rows(self.venues, nodes):
            isolated.add_metric([venue["name"]], 1.0 if venue["isolated"] else 0.0)
            reconciled.add_metric([venue["name"]], 1.0 if venue["reconciled"] else 0.0)
        differences = CounterMetricFamily("limitline_reconcile_differences",
                                          "Differences the reconciler found and acted on, by class.", labels=["class"])
        for kind, count in sorted(nodes.get("reconciler", {}).get("status", {}).get("differences", {}).items()):
            differences.add_metric([kind], count)
        return [isolated, reconciled, differences]

    def _supervision(self) -> Iterable[Metric]:
        depth = GaugeMetricFamily("limitline_mailbox_depth", "Messages queued in an actor's mailbox.", labels=["actor"])
        capacity = GaugeMetricFamily("limitline_mailbox_capacity", "An actor's mailbox capacity.", labels=["actor"])
        restarts = CounterMetricFamily("limitline_restarts", "Restarts of a child since the process started.",
                                       labels=["child"])
        running = GaugeMetricFamily("limitline_child_running", "1 when the child is running.", labels=["child"])
        for node in walk(self.tree):
            if node is self.tree:
                continue
            if node.get("mailbox"):
                depth.add_metric([node["name"]], node["mailbox"]["depth"])
                capacity.add_metric([node["name"]], node["mailbox"]["capacity"])
            if "incarnation" in node:
                restarts.add_metric([node["name"]], max(node["incarnation"] - 1, 0))
            running.add_metric([node["name"]], 1.0 if node.get("state") == "running" else 0.0)
        return [depth, capacity, restarts, running]

    def _calls(self) -> Iterable[Metric]:
        latency = HistogramMetricFamily("limitline_exchange_call_seconds",
                                        "Exchange calls' latency (worker thread included), by venue and operation.",
                                        labels=["venue", "operation"])
        errors = CounterMetricFamily("limitline_exchange_errors", "Failed exchange calls, by venue, operation and kind.",
                                     labels=["venue", "operation", "kind"])
        for venue, stats in sorted(self.call_stats.items()):
            for operation, histogram in sorted(stats.latency.items()):
                buckets = [(_le(bound), count) for bound, count in histogram.cumulative()]
                latency.add_metric([venue, operation], buckets, histogram.total_seconds)
            for (operation, kind), count in sorted(stats.errors.items()):
                errors.add_metric([venue, operation, kind], count)
        return [latency, errors]


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def registry_of(collector: RuntimeCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
