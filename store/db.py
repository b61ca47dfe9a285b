"""The database behind the job queue and the ingested interactions: SQLite files (the embedded
default, one machine) or PostgreSQL (``SPECREC_DATABASE_URL=postgresql://...``: several
workers and API replicas on several machines). One small interface over both, so that
store.jobs and store.feedback hold one copy of every query.

- ``open_database(target)``: a Path is a SQLite file; a ``postgresql://`` URL is PostgreSQL.
- ``db.connect()`` runs statements in autocommit; ``db.write(lock=...)`` is one write
  transaction, ``db.read()`` one read transaction that sees a single committed state.
- ``db.write(lock="name")`` also holds a named lock until COMMIT, so that check-then-insert
  sections (one active job; interaction seq order = commit order) are serialised across
  processes and hosts. SQLite gets that from ``BEGIN IMMEDIATE`` (one writer per file);
  PostgreSQL from a transaction-scoped advisory lock.
- ``db.skip_locked``: the suffix that makes ``SELECT ... LIMIT 1`` take a row no other
  transaction holds (PostgreSQL's ``FOR UPDATE SKIP LOCKED``; empty on SQLite).
- ``db.migrate(store, steps)``: the schema is versioned per store in ``specrec_schema`` and
  upgraded on start, each step once, under a lock.

Statements are written with ``?`` placeholders and ``DOUBLE PRECISION`` columns (both read by
both databases); rows are addressable by position and by column name on both.

SQLite: WAL mode so readers never block the writer, FULL sync so a committed row survives a
crash, a generous busy timeout so the API and the worker can write the same file.
PostgreSQL: psycopg 3 (the ``postgres`` extra) with one psycopg_pool per process.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

Dialect = Literal["sqlite", "postgresql"]

#: what a store accepts: a SQLite file, or a PostgreSQL URL
Target = Path | str

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")

#: PostgreSQL connections per process at most (an API replica or a worker; a connection waits
#: for a free one up to 10 s): 8 x (replicas + workers + their job processes) must stay
#: below the server's max_connections (100 by default)
POOL_SIZE = 8
_INSTALL_HINT = (
    "PostgreSQL needs the psycopg driver: pip install 'specrec[postgres]' "
    "(psycopg[binary] and psycopg-pool)"
)


class StoreUnavailable(RuntimeError):
    """The database cannot be reached now (PostgreSQL down, unreachable, or out of
    connections): the API answers 503, a worker retries at its next poll."""


#: seconds a caller waits for a pooled PostgreSQL connection before StoreUnavailable
POOL_TIMEOUT_S = 10.0


def is_postgres_url(target: Target) -> bool:
    return isinstance(target, str) and target.startswith(_POSTGRES_SCHEMES)


def describe(target: Target) -> str:
    """`target` for logs: a URL without its password."""
    if not is_postgres_url(target):
        return str(target)
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(str(target))
    if parts.password is None:
        return str(target)
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


class Database(Protocol):
    dialect: Dialect
    skip_locked: str
    for_update: str

    def connect(self) -> AbstractContextManager[Connection]: ...

    def write(self, lock: str | None = None) -> AbstractContextManager[Connection]: ...

    def read(self) -> AbstractContextManager[Connection]: ...

    def migrate(self, store: str, steps: Sequence[Mapping[Dialect, str]]) -> None: ...


def open_database(target: Target) -> Database:
    """The database at `target`: a PostgreSQL URL, else a SQLite file path."""
    if is_postgres_url(target):
        return _postgres(str(target))
    return SQLiteDatabase(Path(target))


def _schema_version(db: Connection, store: str) -> int:
    row = db.execute("SELECT version FROM specrec_schema WHERE store = ?", (store,)).fetchone()
    return int(row[0]) if row is not None else 0


def _apply_steps(
    db: Connection, dialect: Dialect, store: str, steps: Sequence[Mapping[Dialect, str]]
) -> None:
    """Inside a write transaction: run the steps above the recorded version, record it."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS specrec_schema (store TEXT PRIMARY KEY, version INTEGER)"
    )
    have = _schema_version(db, store)
    if have > len(steps):
        raise RuntimeError(
            f"the {store} schema is version {have}, newer than this code knows "
            f"({len(steps)}): upgrade specrec"
        )
    for version, step in enumerate(steps, start=1):
        if version <= have:
            continue
        for statement in step[dialect].split(";"):
            if statement.strip():
                db.execute(statement)
    if have < len(steps):
        db.execute("DELETE FROM specrec_schema WHERE store = ?", (store,))
        db.execute("INSERT INTO specrec_schema (store, version) VALUES (?, ?)", (store, len(steps)))


# ---------------------------------------------------------------------------------- SQLite


class SQLiteDatabase:
    """One SQLite file; a fresh connection per call (cheap, and safe across fork)."""

    dialect: Dialect = "sqlite"
    skip_locked = ""  # one writer at a time: BEGIN IMMEDIATE already serialises claims
    for_update = ""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """An autocommit connection with rows addressable by column name; closed on exit."""
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout=30000")
        db.execute("PRAGMA synchronous=FULL")
        try:
            yield db  # type: ignore[misc]  # sqlite3.Connection is a Connection
        finally:
            db.close()

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[Connection]:
        with self.connect() as db:
            db.execute(begin)
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def write(self, lock: str | None = None) -> AbstractContextManager[Connection]:
        """BEGIN IMMEDIATE: the file's write lock up front (which serialises every `lock`)."""
        return self._transaction("BEGIN IMMEDIATE")

    def read(self) -> AbstractContextManager[Connection]:
        """BEGIN (deferred): every query inside reads the same committed state, fixed at the
        first read (a WAL snapshot), however many writers commit meanwhile."""
        return self._transaction("BEGIN")

    def migrate(self, store: str, steps: Sequence[Mapping[Dialect, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
        with self.write() as db:
            _apply_steps(db, self.dialect, store, steps)


# ------------------------------------------------------------------------------ PostgreSQL


class _Row(tuple[Any, ...]):
    """A result row addressable by position and by column name (as sqlite3.Row)."""

    _names: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names[key])
        return tuple.__getitem__(self, key)


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], _Row]:
    names = {c.name: i for i, c in enumerate(cursor.description or ())}
    cls = type("Row", (_Row,), {"_names": names})
    return lambda values: cls(values)


class _PgConnection:
    """A psycopg connection speaking with ``?`` placeholders."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        cursor: Cursor = self._conn.execute(sql.replace("?", "%s"), tuple(params))
        return cursor

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(sql.replace("?", "%s"), rows)


class PostgresDatabase:
    """A PostgreSQL database through a per-process connection pool."""

    dialect: Dialect = "postgresql"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    for_update = " FOR UPDATE"

    def __init__(self, url: str) -> None:
        try:
            import psycopg  # noqa: F401
            from psycopg_pool import ConnectionPool
        except ImportError as e:  # pragma: no cover - the extra is installed for the tests
            raise RuntimeError(_INSTALL_HINT) from e
        self.url = url
        self._migrated: set[str] = set()
        self._pool_class = ConnectionPool
        self._pool_lock = threading.Lock()
        self._pool = self._new_pool()

    def _new_pool(self) -> Any:
        return self._pool_class(
            self.url,
            min_size=1,
            max_size=POOL_SIZE,
            kwargs={"row_factory": _row_factory, "autocommit": True},
            open=True,
            name="specrec",
            timeout=POOL_TIMEOUT_S,
        )

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        """A pooled connection; StoreUnavailable when none can be had or it breaks. A pool
        that failed is replaced by a fresh one, which connects at once when the server is
        back (rather than after the failed pool's growing reconnection backoff)."""
        import psycopg
        from psycopg_pool import PoolClosed, PoolTimeout

        pool = self._pool
        try:
            try:
                conn = pool.getconn()
            except PoolClosed:  # replaced by another thread meanwhile: take the new one
                pool = self._pool
                conn = pool.getconn()
        except (PoolTimeout, PoolClosed, psycopg.OperationalError) as e:
            raise self._unavailable(pool, e) from e
        try:
            yield conn
        except psycopg.OperationalError as e:
            raise self._unavailable(pool, e) from e
        finally:
            pool.putconn(conn)

    def _unavailable(self, pool: Any, error: Exception) -> StoreUnavailable:
        with self._pool_lock:
            if self._pool is pool:
                self._pool = self._new_pool()
                pool.close(timeout=0)
        return StoreUnavailable(f"PostgreSQL at {describe(self.url)}: {error}")

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self._connection() as conn:
            yield _PgConnection(conn)

    @contextmanager
    def _transaction(self, begin: str, lock: str | None) -> Iterator[Connection]:
        with self._connection() as conn:
            db = _PgConnection(conn)
            db.execute(begin)
            try:
                if lock is not None:
                    db.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (f"specrec:{lock}",))
                yield db
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def write(self, lock: str | None = None) -> AbstractContextManager[Connection]:
        """BEGIN (read committed), then the advisory lock `lock` until COMMIT if named."""
        return self._transaction("BEGIN", lock)

    def read(self) -> AbstractContextManager[Connection]:
        """One snapshot for every query inside (repeatable read), never blocking writers."""
        return self._transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", None)

    def migrate(self, store: str, steps: Sequence[Mapping[Dialect, str]]) -> None:
        """Once per store and process (a process may open a store more than once)."""
        if store in self._migrated:
            return
        with self.write(lock="schema") as db:
            _apply_steps(db, self.dialect, store, steps)
        self._migrated.add(store)

    def close(self) -> None:
        self._pool.close()


_pools: dict[tuple[int, str], PostgresDatabase] = {}
_pools_lock = threading.Lock()


def _postgres(url: str) -> PostgresDatabase:
    """One pool per URL and process (a forked child opens its own: connections never cross
    a fork)."""
    key = (os.getpid(), url)
    with _pools_lock:
        db = _pools.get(key)
        if db is None:
            db = _pools[key] = PostgresDatabase(url)
        return db


def close_pools() -> None:
    """Close this process's PostgreSQL pools (their background reconnection stops)."""
    with _pools_lock:
        for db in _pools.values():
            db.close()
        _pools.clear()


def connect_listener(url: str) -> Any:
    """A dedicated autocommit psycopg connection (for LISTEN), outside the pool."""
    try:
        import psycopg
    except ImportError as e:  # pragma: no cover
        raise RuntimeError(_INSTALL_HINT) from e
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=int(POOL_TIMEOUT_S))
    except psycopg.OperationalError as e:
        raise StoreUnavailable(f"PostgreSQL at {describe(url)}: {e}") from e
