"""Who may read and who may act, over HTTP.

Two tokens, both from the environment (never from the config file, which is often shared or
committed), both compared in constant time, neither ever repeated in an answer or a log:

- ``LIMITLINE_OPERATOR_TOKEN``: every control endpoint (pause, resume, cancel open orders)
  needs ``Authorization: Bearer <it>``. Without it set, control over HTTP is disabled (403).
  It also grants reading.
- ``LIMITLINE_READ_TOKEN``: reading (status, events, metrics) when the server listens on an
  address other than loopback. On loopback (the default, ``127.0.0.1``) reading is open:
  only users of this machine can reach it. Listening elsewhere without either token set is
  refused at start (see :func:`exposure_problem`).

The dashboard's page and its scripts (``/``, ``/static/...``) carry no data and are served
to anyone who can reach the port; everything they show comes from the read endpoints.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import socket

OPERATOR_TOKEN_ENV = "LIMITLINE_OPERATOR_TOKEN"
READ_TOKEN_ENV = "LIMITLINE_READ_TOKEN"


def is_loopback(host: str) -> bool:
    """True when ``host`` names only this machine's loopback interface (127.0.0.0/8, ::1,
    ``localhost``). Unresolvable names count as not loopback."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def exposure_problem(host: str) -> str | None:
    """Why the server may not listen on ``host``, or None. Reads may be opened beyond this
    machine only behind a token."""
    if is_loopback(host) or os.environ.get(READ_TOKEN_ENV) or os.environ.get(OPERATOR_TOKEN_ENV):
        return None
    return (
        f"status.host: {host[:80]} is reachable from other machines, and the status endpoints show every "
        f"strategy, order and balance; set {READ_TOKEN_ENV} (readers send 'Authorization: Bearer <token>') "
        "before listening there, or keep status.host at 127.0.0.1"
    )


def exposure_warning(host: str) -> str | None:
    """The loud line printed at start when the server listens beyond loopback."""
    if is_loopback(host):
        return None
    return (
        f"WARNING: the status server listens on {host[:80]}, reachable from other machines; reading needs "
        f"{READ_TOKEN_ENV} (or the operator token), control needs {OPERATOR_TOKEN_ENV}. Put it behind TLS "
        "(a reverse proxy): tokens travel in clear over plain HTTP"
    )


class Denied(Exception):
    """A request may not do what it asks; ``status`` is the HTTP status, the message says
    what to send (never what was sent)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _bearer(authorization: str | None) -> str | None:
    if not authorization or not authorization.startswith("Bearer "):
        return None
    return authorization.removeprefix("Bearer ").strip()


def _matches(given: str | None, expected: str | None) -> bool:
    return bool(given) and bool(expected) and hmac.compare_digest(given.encode(), expected.encode())  # type: ignore[union-attr]


def check_read(authorization: str | None, listening_on_loopback: bool) -> None:
    """Raises :class:`Denied` unless this request may read."""
    if listening_on_loopback:
        return
    given = _bearer(authorization)
    if _matches(given, os.environ.get(READ_TOKEN_ENV)) or _matches(given, os.environ.get(OPERATOR_TOKEN_ENV)):
        return
    raise Denied(401, f"reading needs 'Authorization: Bearer <token>' with {READ_TOKEN_ENV} or {OPERATOR_TOKEN_ENV}")


def check_operator(authorization: str | None) -> None:
    """Raises :class:`Denied` unless this request carries the operator token."""
    token = os.environ.get(OPERATOR_TOKEN_ENV)
    if not token:
        raise Denied(403, f"control over HTTP is disabled: set {OPERATOR_TOKEN_ENV} to enable it")
    if not _matches(_bearer(authorization), token):
        raise Denied(401, f"a valid 'Authorization: Bearer <token>' ({OPERATOR_TOKEN_ENV}) is required")
