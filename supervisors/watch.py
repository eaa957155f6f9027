"""Watching the config file of a running process (``watchfiles``, through anyio on trio).

The directory is watched, not the file: editors save by writing a new file and renaming it
over the old one, which a watch on the old file's inode would miss. A change whose bytes
are the same as the last ones seen (a ``touch``, an editor saving twice) asks for nothing.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Awaitable, Callable

import trio
import watchfiles

log = logging.getLogger("limitline")

#: Milliseconds of quiet before a burst of file events counts as one change (an editor's
#: save is several writes and a rename).
DEBOUNCE_MS = 300


def digest(path: Path) -> str | None:
    """The file's SHA-256, or None if it cannot be read now (moved away mid-save)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


async def watch_config(
    path: str | Path,
    on_change: Callable[[], Awaitable[object]],
    *,
    debounce_ms: int = DEBOUNCE_MS,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Call ``on_change`` each time the bytes of the file at ``path`` change, until
    cancelled. Started (``nursery.start``) once the watch is in place. A file that is
    removed asks for nothing until it is there again."""
    path = Path(path).resolve()
    last = await trio.to_thread.run_sync(digest, path)
    started = False
    # Every change in the directory wakes the loop (a store beside the config changes all
    # the time), and so does a quiet half second: the first wake-up says the watch is in
    # place, and compares the file once more, so an edit made while it was being set up
    # is not missed either.
    async for changes in watchfiles.awatch(path.parent, watch_filter=None, debounce=debounce_ms, recursive=False,
                                           yield_on_timeout=True, rust_timeout=500):
        if started and not any(Path(changed) == path for _, changed in changes):
            continue
        if not started:
            started = True
            task_status.started()
        now = await trio.to_thread.run_sync(digest, path)
        if now is None or now == last:
            continue
        last = now
        log.info("config %s changed on disk: reloading", path)
        await on_change()
