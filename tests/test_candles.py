"""Candle files: the bundled data loads; bad files are refused with the row that shows why."""

from __future__ import annotations

from decimal import Decimal

import pytest

from exchange.candles import CandleDataError, bundled_path, load_candles
from exchange.replay import ReplayFeed

HEADER = "timestamp,open,high,low,close,volume\n"


def test_bundled_btc_usd_1h_loads_whole():
    candles = load_candles(bundled_path())
    assert len(candles) == 20111
    assert candles[0].close == Decimal("2509.17")
    assert all(b.ts - a.ts == 3600 for a, b in zip(candles, candles[1:]))
    assert (bundled_path().parent / "CREDITS.md").read_text().count("CryptoDataDownload") >= 1


@pytest.mark.parametrize(
    "rows, message",
    [
        ("2020-01-01T00:00:00Z,1,2,1,2,5\n2020-01-01T00:00:00Z,1,2,1,2,5\n", r":3: duplicate timestamp"),
        ("2020-01-01T01:00:00Z,1,2,1,2,5\n2020-01-01T00:00:00Z,1,2,1,2,5\n", r":3: out-of-order timestamp"),
        ("2020-01-01T00:00:00Z,1,2,1,2\n", r":2: expected 6 columns, got 5"),
        ("2020-01-01T00:00:00Z,1,abc,1,2,5\n", r":2: high 'abc' is not a number"),
        ("2020-01-01T00:00:00Z,1,2,-1,2,5\n", r":2: low must be a finite number >= 0"),
        ("2020-01-01T00:00:00Z,1.5,1,2,1.5,5\n", r":2: high 1 is below low 2"),
        ("yesterday,1,2,1,2,5\n", r":2: timestamp 'yesterday' is not ISO-8601"),
    ],
)
def test_bad_rows_are_named(tmp_path, rows, message):
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + rows)
    with pytest.raises(CandleDataError, match=message):
        load_candles(path)


def test_a_wrong_header_and_a_missing_file_are_explained(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("time,o,h,l,c,v\n")
    with pytest.raises(CandleDataError, match="header must be timestamp,open,high,low,close,volume"):
        load_candles(path)
    with pytest.raises(CandleDataError, match="cannot read the file"):
        load_candles(tmp_path / "missing.csv")



def test_a_file_that_is_not_a_csv_of_text_is_named_with_its_row(tmp_path):
    binary = tmp_path / "photo.csv"
    binary.write_bytes(HEADER.encode() + b"2020-01-01T00:00:00Z,1,2,1,2,5\n" + bytes(range(128, 256)) * 100)
    with pytest.raises(CandleDataError) as caught:
        load_candles(binary)
    assert str(caught.value) == (
        f"{binary}:3: not UTF-8 text; a candle file is a CSV of UTF-8 text with the header timestamp,open,high,low,close,volume"
    )
    one_line = tmp_path / "one-line.csv"
    one_line.write_text(HEADER + "x" * 200_000 + "\n")
    with pytest.raises(CandleDataError, match=r":2: not readable as CSV \(field larger than field limit"):
        load_candles(one_line)
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(["col"] * 10_000) + "\n")
    with pytest.raises(CandleDataError) as caught:
        load_candles(wide)
    assert str(caught.value).endswith("got ['col', 'col', 'col', 'col', 'col', 'col', 'col', 'col', 'col', 'col', 'col', '…")


def test_replay_releases_candles_as_time_passes():
    candles = load_candles(bundled_path())[:10]
    feed = ReplayFeed(candles, speed=2.0, started_at=100.0)
    assert feed.due(100.4) == []
    assert feed.due(100.5) == candles[:1]
    assert feed.due(102.0) == candles[1:4]
    assert feed.next_release() == 102.5
    assert feed.due(1000) == candles[4:]
    assert feed.finished and feed.due(2000) == []
