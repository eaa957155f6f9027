"""The sqlite schema and its migrations.

``MIGRATIONS[i]`` takes the schema from version ``i`` to ``i + 1``; ``meta.schema_version``
says where a file is. A new version appends a migration here and never edits an old one.
"""

from __future__ import annotations

import sqlite3

from store.errors import NotAStore

MIGRATIONS: list[list[str]] = [
    # 0 -> 1: the first schema.
    [
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            kind TEXT NOT NULL,
            actor TEXT NOT NULL,
            strategy TEXT,
            client_order_id TEXT,
            rule TEXT,
            reason TEXT,
            payload TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX events_by_strategy ON events (strategy, seq)",
        "CREATE INDEX events_by_kind ON events (kind, seq)",
        """CREATE TABLE orders (
            client_order_id TEXT PRIMARY KEY,
            strategy TEXT NOT NULL,
            venue TEXT NOT NULL,
            symbol TEXT NOT NULL,
            side TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
            type TEXT NOT NULL DEFAULT 'limit' CHECK (type = 'limit'),
            price TEXT NOT NULL,
            amount TEXT NOT NULL,
            filled TEXT NOT NULL,
            state TEXT NOT NULL,
            exchange_order_id TEXT,
            rule TEXT,
            reason TEXT,
            trade_ids TEXT NOT NULL DEFAULT '[]',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX orders_by_strategy ON orders (strategy, state)",
        """CREATE TABLE fills (
            venue TEXT NOT NULL,
            trade_id TEXT NOT NULL,
            client_order_id TEXT NOT NULL,
            exchange_order_id TEXT,
            symbol TEXT NOT NULL,
            side TEXT NOT NULL,
            price TEXT NOT NULL,
            amount TEXT NOT NULL,
            fee TEXT NOT NULL,
            fee_currency TEXT NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (venue, trade_id)
        )""",
        # One typed column per field of actors.messages.JournalEntry; amounts as decimal text.
        """CREATE TABLE journal (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('allocate', 'reserve', 'settle', 'release', 'correct')),
            strategy TEXT NOT NULL,
            client_order_id TEXT,
            trade_id TEXT,
            side TEXT,
            price TEXT,
            amount TEXT,
            fee TEXT NOT NULL,
            fee_currency TEXT,
            quote_free TEXT NOT NULL,
            quote_reserved TEXT NOT NULL,
            base_free TEXT NOT NULL,
            base_reserved TEXT NOT NULL,
            realized_pnl TEXT NOT NULL,
            cost_basis TEXT NOT NULL,
            reason TEXT NOT NULL
        )""",
    ],
    # 1 -> 2: what the exchange said had filled when it ended an order (late trades count).
    ["ALTER TABLE orders ADD COLUMN final_filled TEXT"],
    # 2 -> 3: the simulated exchange's state, so shadow mode continues across restarts
    # (one typed column per field of exchange.matching.SimOrder and of
    # exchange.records.ExchangeTrade), and the market time an order was decided at, so its
    # time-to-live still counts after a restart.
    [
        "ALTER TABLE orders ADD COLUMN market_ts INTEGER",
        """CREATE TABLE sim_accounts (
            venue TEXT PRIMARY KEY,
            next_order INTEGER NOT NULL,
            next_trade INTEGER NOT NULL
        )""",
        """CREATE TABLE sim_balances (
            venue TEXT NOT NULL,
            asset TEXT NOT NULL,
            free TEXT NOT NULL,
            used TEXT NOT NULL,
            PRIMARY KEY (venue, asset)
        )""",
        """CREATE TABLE sim_orders (
            venue TEXT NOT NULL,
            exchange_order_id TEXT NOT NULL,
            client_order_id TEXT NOT NULL,
            symbol TEXT NOT NULL,
            side TEXT NOT NULL,
            price TEXT NOT NULL,
            amount TEXT NOT NULL,
            placed_at REAL NOT NULL,
            filled TEXT NOT NULL,
            status TEXT NOT NULL,
            locked TEXT NOT NULL,
            PRIMARY KEY (venue, exchange_order_id)
        )""",
        """CREATE TABLE sim_trades (
            venue TEXT NOT NULL,
            trade_id TEXT NOT NULL,
            exchange_order_id TEXT NOT NULL,
            symbol TEXT NOT NULL,
            side TEXT NOT NULL,
            price TEXT NOT NULL,
            amount TEXT NOT NULL,
            fee TEXT NOT NULL,
            fee_currency TEXT NOT NULL,
            client_order_id TEXT NOT NULL,
            at REAL NOT NULL,
            order_complete INTEGER NOT NULL,
            PRIMARY KEY (venue, trade_id)
        )""",
        "CREATE INDEX sim_trades_by_order ON sim_trades (venue, client_order_id)",
        """CREATE TABLE sim_replay (
            venue TEXT NOT NULL,
            symbol TEXT NOT NULL,
            last_ts INTEGER NOT NULL,
            PRIMARY KEY (venue, symbol)
        )""",
    ],
    # 3 -> 4: reads that stay cheap in a months-long run: the reconciler reads what is open
    # or named by the exchange, the ledger reads back one order's entries.
    [
        "CREATE INDEX orders_by_venue_state ON orders (venue, state)",
        "CREATE INDEX orders_by_exchange_id ON orders (venue, exchange_order_id)",
        "CREATE INDEX journal_by_order ON journal (client_order_id)",
    ],
    # 4 -> 5: whether a simulated trade took liquidity on arrival or rested (ccxt's
    # takerOrMaker, exchange.records.ExchangeTrade.taker_or_maker); NULL for older trades.
    ["ALTER TABLE sim_trades ADD COLUMN taker_or_maker TEXT"],
    # 5 -> 6: positions on perpetual markets. Orders of record say their kind (a stop-limit
    # has a trigger price; reduce-only closes) -- limit kinds only, never a market type --
    # and the position book's journal (one typed column per field of
    # actors.ledger.positions_core.PositionEntry) is the fold the ledger rebuilds it from.
    [
        "ALTER TABLE orders ADD COLUMN order_type TEXT NOT NULL DEFAULT 'limit' "
        "CHECK (order_type IN ('limit', 'stop_limit'))",
        "ALTER TABLE orders ADD COLUMN trigger_price TEXT",
        "ALTER TABLE orders ADD COLUMN reduce_only INTEGER NOT NULL DEFAULT 0",
        """CREATE TABLE position_journal (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL CHECK (kind IN ('allocate', 'adjust', 'reserve', 'fill', 'release', 'trim', 'funding', 'adopt')),
            strategy TEXT NOT NULL,
            at REAL NOT NULL,
            symbol TEXT,
            client_order_id TEXT,
            trade_id TEXT,
            side TEXT,
            price TEXT,
            amount TEXT,
            reduce_only INTEGER NOT NULL,
            leverage TEXT,
            oco_group TEXT,
            fee TEXT NOT NULL,
            fee_currency TEXT,
            wallet TEXT NOT NULL,
            margin_reserved TEXT NOT NULL,
            margin_used TEXT NOT NULL,
            size TEXT NOT NULL,
            entry_cost TEXT NOT NULL,
            realized_pnl TEXT NOT NULL,
            funding TEXT NOT NULL,
            size_reserved TEXT NOT NULL,
            reason TEXT NOT NULL
        )""",
        # A simulated perpetuals account (exchange.perpetuals.PerpetualState), so shadow
        # mode on a swap venue continues across restarts: its account (wallet, positions,
        # marks, counters) as one JSON document, and its orders, conditional orders, trades
        # and income as one JSON row each, written as they change.
        "CREATE TABLE sim_perpetual (venue TEXT PRIMARY KEY, account TEXT NOT NULL)",
        """CREATE TABLE sim_perpetual_rows (
            venue TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('order', 'algo', 'trade', 'income')),
            id TEXT NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (venue, kind, id)
        )""",
    ],
    # 6 -> 7: a trade is named by its market too. Binance numbers trades per symbol, so two
    # markets of one account can each have a trade 1234: keyed by (venue, trade id) alone,
    # the second fill's row was silently dropped.
    [
        """CREATE TABLE fills_by_market (
            venue TEXT NOT NULL,
            trade_id TEXT NOT NULL,
            client_order_id TEXT NOT NULL,
            exchange_order_id TEXT,
            symbol TEXT NOT NULL,
            side TEXT NOT NULL,
            price TEXT NOT NULL,
            amount TEXT NOT NULL,
            fee TEXT NOT NULL,
            fee_currency TEXT NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (venue, symbol, trade_id)
        )""",
        "INSERT INTO fills_by_market SELECT venue, trade_id, client_order_id, exchange_order_id, symbol, side, price, "
        "amount, fee, fee_currency, at FROM fills",
        "DROP TABLE fills",
        "ALTER TABLE fills_by_market RENAME TO fills",
    ],
    # 7 -> 8: the ledger's checkpoint (store/checkpoint.py): its state after the journal
    # entry ``seq``, so a restart folds only the entries after it. Only the latest is kept.
    [
        """CREATE TABLE ledger_checkpoints (
            seq INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            state TEXT NOT NULL
        )""",
    ],
    # 8 -> 9: the journal's index by order holds only the entries a read-back uses (a
    # reservation's reserve and its settles, actors.ledger.core.LedgerCore.recall): a
    # release is every other row and was a third of the writer's sqlite time per row.
    [
        "DROP INDEX journal_by_order",
        "CREATE INDEX journal_by_order ON journal (client_order_id) WHERE kind IN ('reserve', 'settle')",
    ],
    # 9 -> 10: OCO order lists on spot (actors.orders.Order.stop_limit_price) and the
    # simulated spot exchange's lists (exchange.matching.SimOrder's
    # list_client_id, stop_price and triggered), so shadow mode's resting protection survives
    # a restart.
    [
        "ALTER TABLE sim_orders ADD COLUMN list_client_id TEXT",
        "ALTER TABLE sim_orders ADD COLUMN stop_price TEXT",
        "ALTER TABLE sim_orders ADD COLUMN triggered INTEGER",
        "ALTER TABLE orders ADD COLUMN stop_limit_price TEXT",
        # order_type's CHECK admits 'oco' now: SQLite cannot alter a column's constraint,
        # so the column is moved aside, made again and filled back (rows keep their values).
        "ALTER TABLE orders ADD COLUMN order_type_was TEXT",
        "UPDATE orders SET order_type_was = order_type",
        "ALTER TABLE orders DROP COLUMN order_type",
        "ALTER TABLE orders ADD COLUMN order_type TEXT NOT NULL DEFAULT 'limit' "
        "CHECK (order_type IN ('limit', 'stop_limit', 'oco'))",
        "UPDATE orders SET order_type = order_type_was",
        "ALTER TABLE orders DROP COLUMN order_type_was",
    ],
]

SCHEMA_VERSION = len(MIGRATIONS)
#: Tables every limitline store has had since the first schema.
FIRST_TABLES = frozenset({"meta", "events", "orders", "fills", "journal"})


def current_version(connection: sqlite3.Connection) -> int:
    has_meta = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if not has_meta:
        return 0
    row = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def not_a_store(connection: sqlite3.Connection) -> str | None:
    """Why the database on ``connection`` is not a limitline store, or None: it is one, or
    it has no tables yet (a new or empty file). Only reads.

    A database with tables but no ``meta.schema_version``, or without the tables every
    store has, belongs to another program: migrating would write our tables into it."""
    tables = sorted(
        row[0] for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    )
    if not tables:
        return None
    try:
        version = current_version(connection)
    except (sqlite3.Error, ValueError):  # a `meta` table of another shape
        version = 0
    if version == 0 or not FIRST_TABLES <= set(tables):
        shown = ", ".join(tables[:6]) + (f" and {len(tables) - 6} more" if len(tables) > 6 else "")
        return f"is a sqlite database of another program (tables: {shown}), not a limitline store"
    if version > SCHEMA_VERSION:
        return f"has schema version {version}, newer than this limitline ({SCHEMA_VERSION}): upgrade limitline"
    return None


def migrate(connection: sqlite3.Connection) -> int:
    """Bring the file to :data:`SCHEMA_VERSION`, one migration per transaction. A database
    that is not a limitline store is refused (:class:`NotAStore`), never migrated into."""
    foreign = not_a_store(connection)
    if foreign is not None:
        raise NotAStore(f"the store {foreign}")
    version = current_version(connection)
    while version < SCHEMA_VERSION:
        with connection:
            for statement in MIGRATIONS[version]:
                connection.execute(statement)
            version += 1
            connection.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(version),),
            )
    return version
