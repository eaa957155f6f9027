"""Where ``limitline run`` writes its log, and in which format.

- stderr: warnings and errors (as always), text or JSON;
- ``--log-file PATH``: the same plus every line of the activity feed the terminal shows
  (logger ``limitline.events``, level INFO) and informational lines (a config applied),
  appended, in the same format;
- ``--log-format json``: one JSON object per line, on stderr, in the file and for the
  activity lines on stdout: ``{"time": "...Z", "level", "logger", "message"}`` and, for an
  event, ``"event": {kind, at, strategy, actor, client_order_id, rule, reason, payload}``.

Times are UTC, and say so (``Z``). Secrets never appear: every record's message is scrubbed
where it is made (``supervisors.secrets.guard_logs``), and a JSON line is scrubbed whole.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from actors.messages import RecordEvent
from supervisors.secrets import scrubbed

FORMATS = ("text", "json")
EVENTS = "limitline.events"


def utc(at: float) -> str:
    """``2026-12-07T19:41:02.123Z``."""
    return datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_fields(event: RecordEvent) -> dict[str, Any]:
    return {
        "kind": event.kind, "at": utc(event.at), "strategy": event.strategy, "actor": event.actor,
        "client_order_id": event.client_order_id, "rule": event.rule, "reason": event.reason, "payload": event.payload,
    }


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else repr(value)


def json_line(document: dict[str, Any]) -> str:
    return scrubbed(json.dumps(document, default=_plain, ensure_ascii=False))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": utc(record.created), "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        event = getattr(record, "event", None)
        if isinstance(event, RecordEvent):
            document["event"] = event_fields(event)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json_line(document)


class TextFormatter(logging.Formatter):
    converter = time.gmtime

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s", datefmt="%Y-%m-%dT%H:%M:%SZ")


def setup_logging(log_format: str = "text", log_file: str | Path | None = None) -> None:
    """Configure the root logger for a command (replacing any handlers it had).

    Raises ``OSError`` if ``log_file`` cannot be opened for appending."""
    formatter: logging.Formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.WARNING)
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setLevel(logging.WARNING)
    terminal.setFormatter(formatter)
    root.addHandler(terminal)
    ours = logging.getLogger("limitline")
    ours.setLevel(logging.WARNING)
    if log_file is not None:
        file = logging.FileHandler(log_file, mode="a", encoding="utf-8")
        file.setLevel(logging.INFO)
        file.setFormatter(formatter)
        root.addHandler(file)
        ours.setLevel(logging.INFO)  # limitline's own informational lines go to the file
