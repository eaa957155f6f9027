"""Credentials: read from where the config names them, held so they never print.

Sources: environment variables named by ``api_key_env`` / ``secret_env`` /
``password_env``, or a YAML secrets file (``api_key``, ``secret``, ``password``) that only
its owner can read. A problem is reported by naming the variable or the file, never with
a value.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Mapping

import attrs
import yaml

from supervisors.config import CcxtVenueConfig


@attrs.frozen(repr=False)
class Credentials:
    api_key: str | None = None
    secret: str | None = None
    password: str | None = None

    def __repr__(self) -> str:  # never the values, not even in a traceback
        return "Credentials(***)"

    def values(self) -> tuple[str, ...]:
        return tuple(v for v in (self.api_key, self.secret, self.password) if v)


_GUARDED: set[str] = set()
_INSTALLED = False


def guard_logs(values: tuple[str, ...]) -> None:
    """Scrub these values from every log record, whoever logs it.

    ccxt logs each request's headers at DEBUG level, the API key among them; so does any
    HTTP library a user turns on. A record factory catches them all, before any handler or
    formatter sees the record.
    """
    global _INSTALLED
    _GUARDED.update(v for v in values if v)
    if _INSTALLED:
        return
    _INSTALLED = True
    make_record = logging.getLogRecordFactory()

    def scrubbed_record(*args: object, **kwargs: object) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        if _GUARDED:
            message = record.getMessage()
            if any(secret in message for secret in _GUARDED):
                for secret in _GUARDED:
                    message = message.replace(secret, "***")
                record.msg, record.args = message, None
        return record

    logging.setLogRecordFactory(scrubbed_record)


def scrubbed(text: str) -> str:
    """``text`` with every value :func:`guard_logs` guards blanked: for what leaves the
    process other than through logging (a webhook's body, a JSON log line's fields)."""
    for secret in _GUARDED:
        text = text.replace(secret, "***")
    return text


class CredentialsError(Exception):
    """Credentials named by the config cannot be read; the message names where, not what."""


def resolve(venue: CcxtVenueConfig, environ: Mapping[str, str] | None = None) -> Credentials:
    environ = os.environ if environ is None else environ
    if venue.secrets_file is not None:
        return _from_file(Path(venue.secrets_file))
    values = {}
    for field in ("api_key", "secret", "password"):
        name = getattr(venue, f"{field}_env")
        if name is None:
            continue
        value = environ.get(name)
        if not value:
            raise CredentialsError(f"credentials: environment variable {name} ({field}) is not set")
        values[field] = value
    return Credentials(**values)


def _from_file(path: Path) -> Credentials:
    try:
        mode = path.stat().st_mode
    except OSError as error:
        raise CredentialsError(f"credentials: secrets file {path} cannot be read ({error.strerror})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsError(
            f"credentials: secrets file {path} can be read by others (mode {stat.S_IMODE(mode):o}); run chmod 600 {path}"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        raise CredentialsError(f"credentials: secrets file {path} is not readable YAML") from None
    if not isinstance(data, dict) or not data.get("api_key") or not data.get("secret"):
        raise CredentialsError(f"credentials: secrets file {path} needs api_key and secret")
    return Credentials(str(data["api_key"]), str(data["secret"]), str(data["password"]) if data.get("password") else None)
