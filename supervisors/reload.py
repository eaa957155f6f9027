"""What an edit of the running process's config may change, and what it would change.

Every rule about applying a config edit lives here; :meth:`supervisors.app.App.reload`
carries out the plan. An edit is applied whole or not at all:

- **Strategies added** start under their venue's supervisor (their allocation is journaled
  unless the journal already knows the name: an allocation is journaled once).
- **Strategies removed** are stopped, but only while they have no open order and no
  reservation in the ledger; otherwise the whole edit is refused with the reason (cancel
  the orders, or let them fill or expire, and save again). Their books stay in the ledger
  and the store; the same name added again continues them.
- **Strategies changed** restart with the new settings and keep their state: the ledger
  (journal) and the order book of record persist, so their open orders are picked up again.
  A perpetual strategy's ``protection`` is not removed while its protective orders rest
  (:func:`protection_removal_problem`): without it they would rest unmanaged, never resized
  as the position grows and never one-cancels-other, so the edit is refused (close the
  position or cancel them, then save again).
- **Notifications** (webhooks) changed: the notifier restarts with them (notifications still
  waiting for a retry are dropped).
- Refused, with the message that it needs a restart: the store, the status address,
  supervision and reconciler settings, any venue (added, removed or changed), and a
  strategy's venue, symbol or allocation (its orders and account belong to them).
- **An edit never arms live trading**: a strategy added as ``mode: live``, or whose mode
  changes, is refused; live trading takes effect only at a start with ``run --live``.
- Strategies of an exchange (ccxt) venue can change, but not be added or removed: its
  connection routes each strategy's orders (shadow or live) by the set it started with.
- Strategies of a venue that replays in lockstep cannot be added, removed or changed:
  its replay waits for the strategies it started with.
"""

from __future__ import annotations

from typing import Any

import attrs

from actors.strategy.settings import StrategySettings
from supervisors.config import CcxtVenueConfig, Config, NotificationsConfig, SimulatedVenueConfig

#: Sections that are read once, at the start.
NEEDS_RESTART = ("store", "status", "supervision", "reconciler")


@attrs.frozen
class ReloadPlan:
    """The difference to apply: strategies added, removed, and changed (old, new)."""

    added: tuple[StrategySettings, ...] = ()
    removed: tuple[StrategySettings, ...] = ()
    changed: tuple[tuple[StrategySettings, StrategySettings], ...] = ()
    #: The new webhook settings, if they changed (the notifier restarts with them).
    notifications: NotificationsConfig | None = None

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.notifications)

    def summary(self) -> str:
        """One line for the operator, e.g. ``added grid-1; changed dip-buyer (sizing, ttl_seconds)``."""
        parts = []
        if self.added:
            parts.append("added " + ", ".join(s.name for s in self.added))
        if self.removed:
            parts.append("removed " + ", ".join(s.name for s in self.removed))
        for old, new in self.changed:
            parts.append(f"changed {new.name} ({', '.join(changed_fields(old, new))})")
        if self.notifications is not None:
            parts.append("notifications changed")
        return "; ".join(parts) or "no strategy changed"

    def payload(self) -> dict[str, Any]:
        return {
            "added": [s.name for s in self.added],
            "removed": [s.name for s in self.removed],
            "changed": {new.name: changed_fields(old, new) for old, new in self.changed},
            "notifications": self.notifications is not None,
        }


def changed_fields(old: Any, new: Any) -> list[str]:
    return [f.name for f in attrs.fields(type(old)) if getattr(old, f.name) != getattr(new, f.name)]


def plan_reload(old: Config, new: Config) -> ReloadPlan | list[str]:
    """The plan that turns the running ``old`` config into ``new`` (both already checked by
    the loader), or every reason it cannot be applied without a restart, each with its path."""
    problems: list[str] = []
    for section in NEEDS_RESTART:
        before, after = getattr(old, section), getattr(new, section)
        if before != after:
            problems.append(f"{section}: changed from {_brief(before)} to {_brief(after)}; it is read once, at the start: "
                            "restart limitline for it to take effect")
    old_venues = {v.name: v for v in old.venues}
    new_venues = {v.name: v for v in new.venues}
    for i, venue in enumerate(new.venues):
        if venue.name not in old_venues:
            problems.append(f"venues[{i}]: venue {venue.name} is new; venues are connected at the start: restart limitline to add it")
        elif old_venues[venue.name] != venue:
            fields = ", ".join(changed_fields(old_venues[venue.name], venue))
            problems.append(f"venues[{i}]: venue {venue.name} changed ({fields}); a venue's connection is made at the start: "
                            "restart limitline for it to take effect")
    for name in old_venues.keys() - new_venues.keys():
        problems.append(f"venues: venue {name} was removed; its strategies' orders and accounts live there: "
                        "restart limitline to remove it")

    before = {s.name: s for s in old.strategies}
    after = {s.name: s for s in new.strategies}
    added, changed = [], []
    for i, strategy in enumerate(new.strategies):
        at = f"strategies[{i}]"
        previous = before.get(strategy.name)
        venue = new_venues[strategy.venue]
        if previous is None:
            if strategy.mode == "live":
                problems.append(f"{at}.mode: {strategy.name} is added as live; an edit never arms live trading: "
                                "live takes effect only at a start with `limitline run --live`")
            problems += _venue_refuses(venue, at, f"adding {strategy.name}")
            added.append(strategy)
            continue
        if previous == strategy:
            continue
        if previous.mode != strategy.mode:
            problems.append(f"{at}.mode: changed from {previous.mode} to {strategy.mode}; an edit never changes a "
                            "strategy's mode (and never arms live trading): it takes effect only at a start "
                            "(live with `limitline run --live`)")
        for field in ("venue", "symbol"):
            if getattr(previous, field) != getattr(strategy, field):
                problems.append(f"{at}.{field}: changed from {getattr(previous, field)} to {getattr(strategy, field)}; "
                                f"{strategy.name}'s orders and account belong to its {field}: add a strategy under "
                                "another name instead")
        if previous.allocation != strategy.allocation:
            problems.append(f"{at}.allocation: changed; an allocation is journaled once (the ledger's books are the "
                            "record): it takes effect only after `limitline run --fresh`")
        if _lockstep(venue):
            problems.append(f"{at}: changing {strategy.name} needs a restart: venue {venue.name} replays in lockstep, "
                            "waiting for the strategies it started with")
        changed.append((previous, strategy))
    removed = [s for s in old.strategies if s.name not in after]
    for strategy in removed:
        problems += _venue_refuses(old_venues[strategy.venue], "strategies", f"removing {strategy.name}")
    if problems:
        return problems
    notifications = new.notifications if new.notifications != old.notifications else None
    return ReloadPlan(tuple(added), tuple(removed), tuple(changed), notifications)


def protection_removal_problem(at: str, old: StrategySettings, new: StrategySettings, status: dict[str, Any]) -> str | None:
    """Why ``old`` -> ``new`` (the strategy at config path ``at``) cannot be applied now:
    it removes ``protection`` while protective orders rest for the position, or None.
    ``status``: the running strategy's status (its ``protection``, what rests per role, and
    its ``position``, as :class:`actors.strategy.perpetual_core.PerpetualStrategyCore` says)."""
    if old.protection is None or new.protection is not None:
        return None
    resting = status.get("protection") or {}
    if not resting:
        return None
    roles = ", ".join(f"{role} {amount}" for role, amount in sorted(resting.items()))
    position = status.get("position", status.get("held"))
    return (f"{at}.protection: removed while {new.name}'s protective orders rest for its position of {position} "
            f"({roles}): without its protection they would rest unmanaged, never resized as the position changes; "
            "close the position or cancel them first, then save the config again")


def _venue_refuses(venue: Any, at: str, what: str) -> list[str]:
    if isinstance(venue, CcxtVenueConfig):
        return [f"{at}: {what} needs a restart: venue {venue.name} is an exchange; its connection routes each "
                "strategy's orders by the strategies it started with"]
    if _lockstep(venue):
        return [f"{at}: {what} needs a restart: venue {venue.name} replays in lockstep, waiting for the strategies "
                "it started with"]
    return []


def _lockstep(venue: Any) -> bool:
    return isinstance(venue, SimulatedVenueConfig) and any(r.lockstep for r in venue.replay.values())


def _brief(value: Any) -> str:
    if attrs.has(type(value)):
        value = ", ".join(f"{k}: {v}" for k, v in attrs.asdict(value).items())
        value = "{" + value + "}"
    text = str(value)
    return text if len(text) <= 80 else text[:79] + "…"
