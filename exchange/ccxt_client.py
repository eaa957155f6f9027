"""Building the real ccxt client (synchronous API, called from worker threads).

- ``base_url``: rewrites the scheme and host of *every* REST URL of the exchange class and
  keeps the paths, so a testnet, a proxy or ``limitline sandbox`` can stand in for the
  exchange;
- ``sandbox``: ccxt's own sandbox (testnet) mode;
- spot only: markets are loaded from the spot endpoint alone, and currencies are not
  fetched (they need account-level endpoints that a spot API key may not have).

Credentials are passed in, never read here, and never put in a message or a log.
"""

from __future__ import annotations

import threading
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import ccxt

_last_error_headers = threading.local()


def make_client(
    exchange_id: str,
    *,
    api_key: str | None = None,
    secret: str | None = None,
    password: str | None = None,
    base_url: str | None = None,
    sandbox: bool = False,
    timeout_ms: int = 10_000,
) -> ccxt.Exchange:
    cls = getattr(ccxt, exchange_id, None)
    if cls is None or not isinstance(cls, type):
        raise ValueError(f"ccxt has no exchange {exchange_id!r}")
    config: dict[str, Any] = {
        "enableRateLimit": False,  # our own limiter, in the connection core (ccxt's is not thread-safe)
        "timeout": timeout_ms,
        "options": {
            "defaultType": "spot",
            "fetchMarkets": {"types": ["spot"]},
            "fetchMargins": False,  # margin pairs need account-level endpoints
            "fetchCurrencies": False,
        },
    }
    if api_key is not None:
        config["apiKey"] = api_key
    if secret is not None:
        config["secret"] = secret
    if password is not None:
        config["password"] = password
    client = cls(config)
    if sandbox:
        client.set_sandbox_mode(True)
    if base_url is not None:
        client.urls["api"] = rewrite_urls(client.urls["api"], base_url)
    _capture_error_headers(client)
    return client


def _capture_error_headers(client: ccxt.Exchange) -> None:
    """Keep each failed response's headers per thread: ``last_response_headers`` is shared
    by every thread calling this client, so another call could overwrite it first."""
    handle_errors = client.handle_errors

    def remembering(code: Any, reason: Any, url: Any, method: Any, headers: Any, *rest: Any) -> Any:
        _last_error_headers.value = headers or {}
        return handle_errors(code, reason, url, method, headers, *rest)

    client.handle_errors = remembering


def call(method: Callable[[], Any]) -> Any:
    """Run one ccxt call (in a worker thread); a failure carries ``retry_after`` (seconds
    from the failed response's ``Retry-After`` header, or None)."""
    _last_error_headers.value = {}
    try:
        return method()
    except Exception as error:
        headers = getattr(_last_error_headers, "value", {}) or {}
        value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
        try:
            error.retry_after = float(value) if value is not None else None  # type: ignore[attr-defined]
        except ValueError:
            error.retry_after = None  # type: ignore[attr-defined]
        raise


def rewrite_urls(urls: Any, base_url: str) -> Any:
    """Every URL in ccxt's (nested) ``urls['api']`` with the scheme and host of ``base_url``."""
    target = urlsplit(base_url)
    if target.scheme not in ("http", "https") or not target.netloc:
        raise ValueError(f"base_url must look like http://HOST:PORT, got {base_url!r}")
    if isinstance(urls, dict):
        return {key: rewrite_urls(value, base_url) for key, value in urls.items()}
    if isinstance(urls, str) and urls.startswith(("http://", "https://")):
        parts = urlsplit(urls)
        return urlunsplit((target.scheme, target.netloc, parts.path, parts.query, parts.fragment))
    return urls
