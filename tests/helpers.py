"""Helpers shared by the tests that run the whole tree."""

from __future__ import annotations

from typing import Any, Callable

import trio

from actors.messages import RecordEvent


class Watch:
    """Collects the events the writer commits, and wakes a test when one it waits for comes."""

    def __init__(self) -> None:
        self.events: list[RecordEvent] = []
        self._changed = trio.Event()

    def __call__(self, event: RecordEvent) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = trio.Event()

    async def until(self, predicate: Callable[[list[RecordEvent]], bool]) -> None:
        while not predicate(self.events):
            await self._changed.wait()

    def count(self, kind: str, strategy: str | None = None) -> int:
        return sum(e.kind == kind and (strategy is None or e.strategy == strategy) for e in self.events)

    def of(self, kind: str) -> list[RecordEvent]:
        return [e for e in self.events if e.kind == kind]


def walk(node: dict[str, Any]):
    """Every node of a supervision-tree snapshot."""
    yield node
    for child in node.get("children", []):
        yield from walk(child)


def node(snapshot: dict[str, Any], name: str) -> dict[str, Any]:
    return next(n for n in walk(snapshot) if n["name"] == name)
