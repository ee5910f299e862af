"""Embedded SQLite store (stdlib sqlite3, WAL): compact rows, 1m/1h rollups, retention, tiered reads.

The layout is in :mod:`collector.store.sqlite_layout`, the write path in
:mod:`collector.store.sqlite_write`, and the read plan in
:mod:`collector.store.tiers`. An agent process writes while dashboard and
report processes read (WAL); every process checks the file's identity each
round, so a deleted or replaced database is noticed, logged and recreated.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

from collector.errors import ConfigError, StoreRejected, StoreUnavailable
from collector.schema import FieldValue, Point
from collector.store import sqlite_layout as lay
from collector.store import sqlite_pack
from collector.store.base import AggregateQuery, Row
from collector.store.sqlite_read import read_snapshot, run_query, tag_values
from collector.store.sqlite_write import write_measurement

log = logging.getLogger("wattlens.store.sqlite")

NS = 1_000_000_000
# Connections to a database file that was deleted or replaced. Closing one would
# checkpoint and unlink "<path>-wal" by name, which by then may be the new file's
# WAL; so they are kept open (one per replacement) until the process exits.
_ABANDONED: list[sqlite3.Connection] = []


class SQLiteStore:
    """Compact rows keyed by (time, series id), rollups kept on write, reads from the coarsest tier.

    Each row is unique per (series, time_ns), as in InfluxDB: writing the same
    point twice (a spool replay) updates it instead of counting it twice, and a
    later write with other fields merges into the row. Time buckets are epoch
    aligned, like InfluxDB's ``GROUP BY time()``.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout_s: float = 30.0,
                 purge_every_s: float = 60.0, check_every_s: float = 1.0,
                 tiered: bool = True, url: str | None = None) -> None:
        self.path = Path(path)
        self.url = url or f"sqlite://{self.path}"  # as given, or sqlite:///abs/path.db
        if self.path.is_dir():
            raise ConfigError(f"--store: {self.path} is a directory; give a file path like "
                              f"sqlite:///{self.path / 'wattlens.db'}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tiered = tiered  # False: read raw rows only (the benchmarks' reference)
        self.reopened = 0  # times the file was found deleted or replaced and opened again
        self._timeout_s = timeout_s
        self._purge_every_ns = int(purge_every_s * NS)
        self._check_every_ns = int(check_every_s * NS)
        self._lock = threading.RLock()
        self._local = threading.local()
        self._generation = 0
        self._conns: list[sqlite3.Connection] = []
        self._identity: tuple[int, int] | None = None
        self._journal_ids: dict[str, tuple[int, int] | None] = {}
        self._checked_ns = 0
        self._purged_ns = 0
        self._reset_caches()
        self._open_file()

    def _reset_caches(self) -> None:
        self._sids: dict[str, dict[str, int]] = {}
        self._cols: dict[str, tuple[set[str], set[str]]] = {}  # m -> (tags, fields)
        self._retention: dict[str, int] | None = None

    # --- the file and its connections -------------------------------------------------
    def _open_file(self) -> None:
        for suffix in ("-wal", "-shm"):
            stale = Path(f"{self.path}{suffix}")
            # A deleted or replaced database's journal must not replay into the file now at
            # the path: move it aside when there is no database, or when it is the very
            # journal this process saw with the old file (another process's new one stays).
            ident = _identity(stale)
            if ident is not None and (not self.path.exists()
                                      or ident == self._journal_ids.get(suffix)):
                aside = stale.with_name(f"{stale.name}.orphaned-{time.time_ns()}")
                stale.rename(aside)
                log.error("SQLite store %s: moved the old database's %s aside to %s", self.path,
                          suffix, aside)
        conn = self._conn()
        conn.execute("PRAGMA journal_mode=WAL")
        with self._lock:
            with lay.immediate(conn):
                lay.create_meta(conn)
                upgraded = lay.upgrade(conn)
            if upgraded:
                log.warning("SQLite store %s: added the 5-minute tier (layout %s) for %s, built "
                            "from the 1-minute rows", self.path, lay.LAYOUT_VERSION,
                            ", ".join(upgraded))
            old = lay.old_layout_tables(conn)
            if old:
                log.error("SQLite store %s holds tables of the first layout (%s) that this version "
                          "does not read; run `wattlens store init --store %s` to move them into "
                          "the current layout", self.path, ", ".join(old), self.url)
            self._identity = _identity(self.path)
            self._note_journal()

    def _note_journal(self) -> None:
        self._journal_ids = {sfx: _identity(Path(f"{self.path}{sfx}")) for sfx in ("-wal", "-shm")}

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "generation", -1) != self._generation:
            try:
                conn = sqlite3.connect(self.path, timeout=self._timeout_s,
                                       isolation_level=None, check_same_thread=False)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open SQLite store {self.path}: {exc}") from exc
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={int(self._timeout_s * 1000)}")
            self._local.conn = conn
            self._local.generation = self._generation
            with self._lock:
                self._conns.append(conn)
        return conn

    def check_file(self, *, force: bool = False) -> bool:
        """Reopen (or recreate) the database if its file was deleted or replaced; True if it was.

        Called before every write and, at most once per ``check_every_s``, before
        reads. The error names the path, so an operator sees what happened.
        """
        now = time.monotonic_ns()
        if not force and now - self._checked_ns < self._check_every_ns:
            return False
        self._checked_ns = now
        identity = _identity(self.path)
        if identity == self._identity:
            self._note_journal()
            return False
        with self._lock:
            what = "was deleted" if identity is None else "was replaced by another file"
            log.error("SQLite store %s %s while open; %s it and writing on", self.path, what,
                      "recreating" if identity is None else "reopening")
            _ABANDONED.extend(self._conns)
            self._conns = []
            self._generation += 1
            self._reset_caches()
            self.reopened += 1
            try:
                self._open_file()
            except (OSError, sqlite3.Error) as exc:
                raise StoreUnavailable(f"SQLite store {self.path}: cannot recreate the "
                                       f"database file: {exc}") from exc
        return True

    def close(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        self._local.conn = None

    # --- settings -------------------------------------------------------------------
    @property
    def retention_s(self) -> dict[str, int]:
        """Seconds kept per tier (raw, 1m, 5m, 1h); 0 means kept forever."""
        if self._retention is None:
            self._retention = lay.read_retention(self._conn())
        return dict(self._retention)

    def init(self, *, raw_retention: str = "7d", rollup_1m_retention: str = "90d",
             rollup_1h_retention: str = "INF", rollups: bool = True) -> list[str]:
        """Set the retention of each tier (``wattlens store init``); rollups are always kept."""
        wanted = {"raw": lay.retention_seconds("--raw-retention", raw_retention),
                  "1m": lay.retention_seconds("--rollup-1m-retention", rollup_1m_retention),
                  "5m": lay.retention_seconds("--rollup-1m-retention", rollup_1m_retention),
                  "1h": lay.retention_seconds("--rollup-1h-retention", rollup_1h_retention)}
        conn = self._conn()
        with self._lock:
            with lay.immediate(conn):
                lay.write_retention(conn, wanted)
        self._retention = wanted
        lines = [f"retention {tier}: {_days(s)}" for tier, s in wanted.items()]
        if not rollups:
            lines.append("rollups: the embedded store always keeps them (they are what makes "
                         "long windows fast)")
        lines += self.migrate()
        removed = self.purge()
        lines.append(f"purged {removed} rows past retention")
        return lines

    def migrate(self, batch: int = 50_000) -> list[str]:
        """Move the rows of first-layout tables (``m:NAME``) through ``write``, then drop them."""
        from collector.schema import Point

        lines: list[str] = []
        conn = self._conn()
        for name in lay.old_layout_tables(conn):
            measurement = name[2:]
            cols = [c for c in lay.columns(conn, lay.qident(name)) if c not in ("series",)]
            cur = conn.execute(f"SELECT {','.join(lay.qident(c) for c in cols)} "
                               f"FROM {lay.qident(name)}")
            moved = 0
            while chunk := cur.fetchmany(batch):
                pts = []
                for row in chunk:
                    values = dict(zip(cols, row, strict=True))
                    tags = tuple(sorted((c[2:], v) for c, v in values.items()
                                        if c.startswith("t:") and v not in (None, "")))
                    fields = tuple(sorted((c[2:], v) for c, v in values.items()
                                          if c.startswith("f:") and v is not None))
                    if fields:
                        pts.append(Point(measurement, tags, fields, int(values["time_ns"])))
                self.write(pts)
                moved += len(pts)
            with self._lock:
                conn.execute(f"DROP TABLE {lay.qident(name)}")
            lines.append(f"moved {moved} {measurement} rows from the first layout")
        return lines

    # --- writes --------------------------------------------------------------------
    def write(self, points: Sequence[Point]) -> None:
        if not points:
            return
        by_m: dict[str, dict[tuple[int, int], dict[str, FieldValue]]] = {}
        with self._lock:
            self.check_file(force=True)
            conn = self._conn()
            try:
                conn.execute("BEGIN IMMEDIATE")
                for p in points:
                    rows = by_m.setdefault(p.measurement, {})
                    sid = self._sid(conn, p)
                    fields = rows.setdefault((p.time_ns, sid), {})
                    fields.update(p.fields)
                for m, rows in by_m.items():
                    self._ensure_fields(conn, m, {k for f in rows.values() for k in f})
                    write_measurement(conn, m, rows, sorted(self._cols[m][1]))
                conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self._abort(conn)
                raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc
            except sqlite3.Error as exc:
                self._abort(conn)
                raise StoreRejected(f"SQLite store {self.path} rejected points: {exc}") from exc
            self._maybe_purge(max(p.time_ns for p in points))

    def _abort(self, conn: sqlite3.Connection) -> None:
        lay.rollback(conn)
        self._reset_caches()  # a rolled-back transaction may have added columns or series

    def _sid(self, conn: sqlite3.Connection, p: Point) -> int:
        sids = self._sids.get(p.measurement)
        if sids is None:
            self._ensure_measurement(conn, p.measurement)
            sids = self._sids[p.measurement]
        key = repr(p.tags)  # unambiguous even for hostile tag values
        sid = sids.get(key)
        if sid is not None:
            return sid
        st = lay.series_table(p.measurement)
        row = conn.execute(f"SELECT id FROM {st} WHERE key = ?", (key,)).fetchone()
        if row is None:
            tags = dict(p.tags)
            have = self._cols[p.measurement][0]
            if set(tags) - have:
                have |= {c[2:] for c in lay.columns(conn, st) if c.startswith("t:")}
            for tag in sorted(set(tags) - have):
                lay.add_tag(conn, p.measurement, tag)
                have.add(tag)
            cols = ["key", *(lay.tag_col(t) for t in tags)]
            cur = conn.execute(f"INSERT INTO {st} ({','.join(cols)}) VALUES "
                               f"({','.join('?' * len(cols))})", (key, *tags.values()))
            sid = int(cur.lastrowid or 0)
        else:
            sid = int(row[0])
        sids[key] = sid
        return sid

    def _ensure_measurement(self, conn: sqlite3.Connection, m: str) -> None:
        lay.create_measurement(conn, m)
        tags = {c[2:] for c in lay.columns(conn, lay.series_table(m)) if c.startswith("t:")}
        fields = {c[2:] for c in lay.columns(conn, lay.table("raw", m)) if c.startswith("f:")}
        self._cols[m] = (tags, fields)
        self._sids[m] = {}

    def _ensure_fields(self, conn: sqlite3.Connection, m: str, wanted: set[str]) -> None:
        have = self._cols[m][1]
        if wanted - have:  # another process may have added it: look before adding
            have |= {c[2:] for c in lay.columns(conn, lay.table("raw", m)) if c.startswith("f:")}
        for f in sorted(wanted - have):
            lay.add_field(conn, m, f)
            have.add(f)

    def _maybe_purge(self, newest_ns: int) -> None:
        now = time.monotonic_ns()
        if now - self._purged_ns < self._purge_every_ns:
            return
        self._purged_ns = now
        try:
            self.purge(newest_ns)
        except sqlite3.Error as exc:
            log.warning("SQLite store %s: retention purge failed, will retry: %s", self.path, exc)

    def purge(self, newest_ns: int | None = None) -> int:
        """Delete what is past each tier's retention, measured back from the newest point written
        (or the wall clock if that is earlier: a point stamped in the future purges nothing early)."""
        wall = time.time_ns()
        now_ns = wall if newest_ns is None else min(wall, newest_ns)
        measurements = self._measurements()
        keep_raw_s = self.retention_s["raw"]
        with self._lock:
            conn = self._conn()
            deleted = lay.purge(conn, measurements, self.retention_s, now_ns)
            if keep_raw_s > 0:  # packed raw minutes go with the raw rows
                deleted += sum(sqlite_pack.purge(conn, m, now_ns - keep_raw_s * NS)
                               for m in measurements)
        self.pack()
        return deleted

    def pack(self, *, max_minutes: int = 480, budget_s: float | None = 2.0) -> int:
        """Pack raw rows older than a few minutes into one block per series and minute: at most
        ``max_minutes`` a measurement, a minute a transaction, and none begun after ``budget_s``
        (None: no limit), so the writer is never held up long; the next call goes on. Rows
        packed."""
        until = None if budget_s is None else time.monotonic() + budget_s
        with self._lock:
            conn = self._conn()
            return sum(sqlite_pack.pack(conn, m, max_minutes=max_minutes, until=until)
                       for m in self._measurements())

    def _measurements(self) -> list[str]:
        rows = self._conn().execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'raw:%'").fetchall()
        return sorted(r[0][4:] for r in rows)

    # --- reads ---------------------------------------------------------------------
    def _read_cols(self, m: str) -> tuple[set[str], set[str]] | None:
        self.check_file()
        conn = self._conn()
        st = lay.series_table(m)
        tags = {c[2:] for c in lay.columns(conn, st) if c.startswith("t:")}
        if not lay.columns(conn, st):
            return None
        fields = {c[2:] for c in lay.columns(conn, lay.table("raw", m)) if c.startswith("f:")}
        return tags, fields

    def query(self, q: AggregateQuery) -> list[Row]:
        cols = self._read_cols(q.measurement)
        if cols is None:
            return []
        try:
            return run_query(self._conn(), q, *cols, tiered=self.tiered)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {self.path}: query failed: {exc}") from exc

    def tag_values(self, measurement: str, tag: str, start_ns: int, end_ns: int) -> list[str]:
        cols = self._read_cols(measurement)
        if cols is None or tag not in cols[0]:
            return []
        return tag_values(self._conn(), measurement, tag, start_ns, end_ns)

    def time_range(self, measurement: str) -> tuple[int, int] | None:
        """(first, last) point time; past raw retention, first is the oldest rollup bucket's start."""
        if self._read_cols(measurement) is None:
            return None
        conn = self._conn()
        with read_snapshot(conn):
            return _time_range(conn, measurement)

    def count(self, measurement: str, tier: str = "raw") -> int:
        """Rows stored for a measurement in one tier (for tests and diagnostics)."""
        if self._read_cols(measurement) is None:
            return 0
        conn = self._conn()
        rows = int(conn.execute(f"SELECT COUNT(*) FROM {lay.table(tier, measurement)}").fetchone()[0])
        return rows + (sqlite_pack.rows_count(conn, measurement) if tier == "raw" else 0)

    def file_bytes(self) -> int:
        """Size of the database and its WAL on disk."""
        return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())


def _time_range(conn: sqlite3.Connection, measurement: str) -> tuple[int, int] | None:
    first: int | None = None
    last: int | None = None
    for width_s, tier in sorted(lay.TIER_TABLE.items()):
        t = lay.table(tier, measurement)
        # Two subqueries: each is one B-tree seek; MIN and MAX in one SELECT scan the table.
        lo, hi = conn.execute(f"SELECT (SELECT MIN(time_ns) FROM {t}), "
                              f"(SELECT MAX(time_ns) FROM {t})").fetchone()
        if width_s == 0:  # raw points: rows and packed minutes
            packed = sqlite_pack.bounds(conn, measurement)
            if packed is not None:
                lo = packed[0] if lo is None else min(int(lo), packed[0])
                hi = packed[1] if hi is None else max(int(hi), packed[1])
        if lo is None:
            continue
        # A rollup row starts its bucket: it only moves `first` back when the finer
        # tier lost whole buckets before it to retention.
        if first is None or int(lo) + width_s * NS <= first:
            first = int(lo)
        last = max(last or int(hi), int(hi))
    if first is None or last is None:
        return None
    return first, last


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a file, or None when there is none: what tells a new file from the old."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _days(seconds: int) -> str:
    if seconds == 0:
        return "kept"
    return f"{seconds / 86400:g} d" if seconds % 86400 == 0 else f"{seconds} s"


def from_url(url: str) -> SQLiteStore:
    """``sqlite:///abs/path.db``, ``sqlite://relative.db`` or a bare path."""
    if "://" not in url:
        return SQLiteStore(url)
    parts = urlsplit(url)
    path = unquote(parts.netloc + parts.path)
    if path.startswith("//"):  # sqlite:////abs/path.db, as f"sqlite:///{absolute}" writes it
        path = path[1:]
    if not path:
        raise ConfigError(f"--store: {url!r} names no file; use sqlite:///path/to/wattlens.db")
    return SQLiteStore(path, url=url)
