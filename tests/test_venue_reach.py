"""Errors classified the same whichever host answers, and the venue settings that keep the
exchange's own host reachable (``https_proxy``, ``ca_file``), through ccxt's real code."""

from __future__ import annotations

import json
import socket
import threading
from decimal import Decimal

import ccxt
import pytest
import trio
import trustme

from exchange.candles import bundled_path
from exchange.ccxt_adapter import EXCHANGE_CODES, classify, error_reason, exchange_error_code, make_client
from exchange.errors import ErrorKind
from exchange.sandbox import Sandbox, SandboxSettings, serve_sandbox
from supervisors.config import ConfigError, parse_config
from test_config import ccxt_venue, default_raw

PRODUCTION = "https://fapi.binance.com/fapi/v1/order"
ELSEWHERE = "http://127.0.0.1:8790/fapi/v1/order"


def raised_by_ccxt(url: str, code: int, status: int = 400) -> ccxt.BaseError:
    """What ccxt.binanceusdm raises for Binance's answer ``{"code": code}`` from ``url``."""
    client = make_client("binanceusdm", market_type="swap")
    body = json.dumps({"code": code, "msg": f"message of {code}"})
    with pytest.raises(ccxt.BaseError) as caught:
        client.handle_errors(status, "", url, "POST", {}, body, json.loads(body), {}, "")
    return caught.value


@pytest.mark.parametrize("code", sorted(EXCHANGE_CODES))
def test_an_exchange_code_has_one_kind_on_binances_host_and_behind_any_other(code):
    production, elsewhere = raised_by_ccxt(PRODUCTION, code), raised_by_ccxt(ELSEWHERE, code)
    assert exchange_error_code(elsewhere) == code
    for write in (False, True):
        assert classify(production, write=write) == classify(elsewhere, write=write) == EXCHANGE_CODES[code][write]


@pytest.mark.parametrize("code, kind, reason", [
    (-2019, ErrorKind.REJECTED, "margin insufficient"),
    (-2022, ErrorKind.REJECTED, "reduce-only order rejected"),
    (-4164, ErrorKind.REJECTED, "below the minimum notional"),
    (-1008, ErrorKind.AMBIGUOUS, "server overloaded, outcome unknown"),
])
def test_behind_a_base_url_ccxt_gives_a_plain_exchange_error_and_the_code_gives_the_kind(code, kind, reason):
    error = raised_by_ccxt(ELSEWHERE, code)
    assert type(error) is ccxt.ExchangeError  # ccxt's futures table applies on Binance's host only
    assert (classify(error, write=True), error_reason(error)) == (kind, reason)


def test_without_a_code_the_class_decides_and_a_ban_stays_a_rate_limit():
    assert exchange_error_code(ccxt.ExchangeNotAvailable("binanceusdm 503 <html>")) is None
    assert classify(ccxt.ExchangeNotAvailable("binanceusdm 503 <html>"), write=True) is ErrorKind.AMBIGUOUS
    # ccxt turns -2015 after a successful login into DDoSProtection (a temporary ban).
    ban = ccxt.DDoSProtection('binanceusdm {"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}')
    assert classify(ban, write=False) is ErrorKind.RATE_LIMITED


# ------------------------------------------------------------------ settings


def problems_with(**venue) -> list[str]:
    raw = default_raw()
    raw["venues"].append(ccxt_venue(**venue))
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    return caught.value.problems


def test_a_missing_ca_file_a_bad_proxy_and_an_unknown_market_type_are_config_errors(tmp_path):
    missing = tmp_path / "corporate-ca.pem"
    assert problems_with(ca_file=str(missing), https_proxy="proxy.corp:3128", market_type="futures") == [
        "venues[1].market_type: must be one of spot, swap, got 'futures'",
        "venues[1].https_proxy: must look like http://HOST:PORT, got 'proxy.corp:3128'",
        f"venues[1].ca_file: ca_file {str(missing)!r} does not exist; give the path of the PEM bundle of the CA that "
        "signs your proxy's certificates",
    ]
    with pytest.raises(ValueError, match="does not exist"):
        make_client("binanceusdm", ca_file=str(missing))


def test_the_settings_are_accepted_and_reach_the_client(tmp_path):
    bundle = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    raw = default_raw()
    raw["venues"].append(ccxt_venue(exchange="binanceusdm", market_type="swap", https_proxy="http://127.0.0.1:3128", ca_file=str(bundle)))
    venue = parse_config(raw).venue("binance")
    from supervisors.app import build_client

    client = build_client(venue, None)
    assert client.httpsProxy == "http://127.0.0.1:3128" and client.options["defaultType"] == "swap"
    assert client.session.get_adapter("https://fapi.binance.com").ca_file == str(bundle)
    assert client.urls["api"]["fapiPublic"].startswith("https://fapi.binance.com")  # the real host is kept


def test_requests_go_through_the_proxy_to_the_exchanges_own_host():
    """A proxy on loopback hears ccxt ask to tunnel to fapi.binance.com (and refuses)."""
    heard: list[str] = []
    listener = socket.create_server(("127.0.0.1", 0))

    def proxy() -> None:
        connection, _ = listener.accept()
        with connection:
            heard.append(connection.recv(4096).decode(errors="replace").split("\r\n")[0])
            connection.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=proxy, daemon=True)
    thread.start()
    client = make_client("binanceusdm", market_type="swap", https_proxy=f"http://127.0.0.1:{listener.getsockname()[1]}", timeout_ms=5000)
    with pytest.raises(ccxt.NetworkError):
        client.fetch_time()
    thread.join(timeout=10)
    listener.close()
    assert [line.rsplit(" ", 1)[0] for line in heard] == ["CONNECT fapi.binance.com:443"]


async def test_a_ca_file_lets_the_client_trust_a_host_signed_by_that_ca(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    sandbox = Sandbox(SandboxSettings(data=str(bundled_path()), market="usdm", balances={"USDT": Decimal(100)}))
    async with trio.open_nursery() as nursery:
        url = await nursery.start(lambda task_status: serve_sandbox(
            sandbox, 0, tls=(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")), task_status=task_status))
        assert url.startswith("https://")

        def connect(ca_file):
            client = make_client("binanceusdm", base_url=url, market_type="swap", ca_file=ca_file, timeout_ms=5000)
            return client.fetch_time()

        with pytest.raises(ccxt.NetworkError) as untrusted:
            await trio.to_thread.run_sync(connect, None)
        assert "CERTIFICATE_VERIFY_FAILED" in repr(untrusted.value.__cause__ or untrusted.value.__context__)
        assert await trio.to_thread.run_sync(connect, str(tmp_path / "ca.pem")) > 0
        nursery.cancel_scope.cancel()
