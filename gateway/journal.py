"""The gateway's job journal: SQLite in WAL mode, in the spool, the one record of what was received,
what is queued, running, sent or failed — so a restart resumes every series where it stopped.

Tables:
- `instances`: every acknowledged instance (its full SOP Instance UID as the dataset gives it,
  series, spool file, bytes, SHA-256 of the stored bytes). A row is committed after its file is
  durable and before the C-STORE success goes back; a UID already there is the same instance
  only with the same series and content.
- `series`: one job per series: state `received` (instances arriving), `queued` (quiet for the
  stable age, routed), `running`, `sending` (results written, deliveries pending), `sent`,
  `failed` or `ignored`, with the route, the reason of a failure and the retry time.
- `deliveries`: one row per result object and destination; `sent` rows are never sent again (a
  kill between a destination's acknowledgement and this row's update sends that object again:
  delivery is at least once, made idempotent by the objects' derived UIDs).

Every write is one short transaction (BEGIN IMMEDIATE); each thread has its own connection.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
from pathlib import Path

RECEIVED, QUEUED, RUNNING, SENDING, SENT, FAILED, IGNORED = "received", "queued", "running", "sending", "sent", "failed", "ignored"
STATES = (RECEIVED, QUEUED, RUNNING, SENDING, SENT, FAILED, IGNORED)

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY, series_uid TEXT NOT NULL, path TEXT NOT NULL, bytes INTEGER NOT NULL,
    calling_ae TEXT NOT NULL, received REAL NOT NULL, sha256 TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid);
CREATE TABLE IF NOT EXISTS series (
    uid TEXT PRIMARY KEY, study_uid TEXT, patient_id TEXT, description TEXT, calling_ae TEXT,
    first_received REAL, last_received REAL, instances INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL, route TEXT NOT NULL DEFAULT '', reason TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0, not_before REAL NOT NULL DEFAULT 0,
    started REAL, segmented REAL, finished REAL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    series_uid TEXT NOT NULL, destination TEXT NOT NULL, sop_uid TEXT NOT NULL, path TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0, not_before REAL NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '', sent REAL,
    PRIMARY KEY (series_uid, destination, sop_uid));
"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SeriesJob:
    """One series' row of the journal."""

    uid: str
    study_uid: str
    patient_id: str
    description: str
    calling_ae: str
    first_received: float
    last_received: float
    instances: int
    bytes: int
    state: str
    route: str
    reason: str
    attempts: int
    not_before: float
    started: float | None
    segmented: float | None
    finished: float | None
    updated: float


class Journal:
    """The journal at `path` (made with its schema if new)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._db().executescript(SCHEMA)  # CREATE ... IF NOT EXISTS, committed by executescript itself
        columns = {row[1] for row in self._db().execute("PRAGMA table_info(instances)")}
        if "sha256" not in columns:  # a journal of an earlier version: its rows' digests are unknown ('')
            self._db().execute("ALTER TABLE instances ADD COLUMN sha256 TEXT NOT NULL DEFAULT ''")

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives a crash of the process; a power cut may lose the
            # last commits, but every acknowledged instance is an fsynced spool file that `recover`
            # records again, so the instance rows need no fsync of their own (one per C-STORE).
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    class _Transaction:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, kind, value, traceback) -> None:
            self.db.execute("COMMIT" if kind is None else "ROLLBACK")

    def _write(self) -> "_Transaction":
        return self._Transaction(self._db())

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # --- receiving ------------------------------------------------------------------------------

    def instance(self, sop_uid: str) -> tuple[str, str] | None:
        """(series UID, SHA-256) of the instance recorded under the full `sop_uid`, or None."""
        row = self._db().execute("SELECT series_uid, sha256 FROM instances WHERE sop_uid = ?", (sop_uid,)).fetchone()
        return (row[0], row[1]) if row is not None else None

    def add_instance(self, *, sop_uid: str, series_uid: str, study_uid: str, patient_id: str, description: str,
                     calling_ae: str, path: Path, size: int, sha256: str = "", now: float | None = None) -> bool:
        """Record an acknowledged instance; returns False when its SOP Instance UID was recorded
        already (a re-send of the same content: nothing changes, the series is not reopened)."""
        now = time.time() if now is None else now
        with self._write() as db:
            known = db.execute("SELECT 1 FROM instances WHERE sop_uid = ?", (sop_uid,)).fetchone()
            if known:
                return False
            db.execute("INSERT INTO instances (sop_uid, series_uid, path, bytes, calling_ae, received, sha256) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", (sop_uid, series_uid, str(path), size, calling_ae, now, sha256))
            row = db.execute("SELECT state FROM series WHERE uid = ?", (series_uid,)).fetchone()
            if row is None:
                db.execute("INSERT INTO series (uid, study_uid, patient_id, description, calling_ae, first_received, "
                           "last_received, instances, bytes, state, updated) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?)",
                           (series_uid, study_uid, patient_id, description, calling_ae, now, now, size, RECEIVED, now))
            else:
                # new instances reopen a series (a late slice, a re-acquisition): it is segmented again
                db.execute("UPDATE series SET last_received = ?, instances = instances + 1, bytes = bytes + ?, state = ?, "
                           "reason = '', attempts = 0, not_before = 0, updated = ? WHERE uid = ?",
                           (now, size, RECEIVED, now, series_uid))
                # its new results replace the old ones (same UIDs) and are sent again
                db.execute("UPDATE deliveries SET state = 'pending', attempts = 0, not_before = 0 WHERE series_uid = ?", (series_uid,))
            return True

    def series_instances(self, series_uid: str) -> int:
        """The instances recorded of series `series_uid` (0 when none was received)."""
        row = self._db().execute("SELECT instances FROM series WHERE uid = ?", (series_uid,)).fetchone()
        return int(row[0]) if row is not None else 0

    def known_paths(self) -> set[str]:
        return {row[0] for row in self._db().execute("SELECT path FROM instances")}

    def instance_files(self, series_uid: str) -> list[Path]:
        rows = self._db().execute("SELECT path FROM instances WHERE series_uid = ? ORDER BY path", (series_uid,))
        return [Path(row[0]) for row in rows]

    # --- jobs -----------------------------------------------------------------------------------

    def stable(self, older_than: float) -> list[SeriesJob]:
        """Series still `received` whose last instance came before `older_than` (epoch seconds)."""
        rows = self._db().execute("SELECT * FROM series WHERE state = ? AND last_received <= ? ORDER BY last_received",
                                  (RECEIVED, older_than))
        return [SeriesJob(**dict(row)) for row in rows]

    def set_state(self, uid: str, state: str, *, route: str | None = None, reason: str = "", expect: str | None = None,
                  not_before: float = 0.0, count_attempt: bool = False) -> bool:
        """Move series `uid` to `state` (only from `expect`, when given); returns whether it moved."""
        now = time.time()
        stamps = {RUNNING: "started", SENDING: "segmented", SENT: "finished", FAILED: "finished", IGNORED: "finished"}
        with self._write() as db:
            sql = f"UPDATE series SET state = ?, reason = ?, not_before = ?, updated = ?{', route = ?' if route is not None else ''}" \
                  f"{', attempts = attempts + 1' if count_attempt else ''}" \
                  f"{f', {stamps[state]} = ?' if state in stamps else ''} WHERE uid = ?"
            params: list = [state, reason, not_before, now]
            if route is not None:
                params.append(route)
            if state in stamps:
                params.append(now)
            params.append(uid)
            if expect is not None:
                sql += " AND state = ?"
                params.append(expect)
            return db.execute(sql, params).rowcount == 1

    def next_queued(self, now: float | None = None) -> SeriesJob | None:
        """The oldest queued series whose retry time has come, moved to `running` (claimed)."""
        now = time.time() if now is None else now
        while True:
            row = self._db().execute("SELECT * FROM series WHERE state = ? AND not_before <= ? ORDER BY last_received LIMIT 1",
                                     (QUEUED, now)).fetchone()
            if row is None:
                return None
            if self.set_state(row["uid"], RUNNING, route=row["route"], expect=QUEUED, count_attempt=True):
                return self.job(row["uid"])

    def requeue_interrupted(self) -> int:
        """After a restart: `running` jobs (the process died mid-segmentation) are queued again."""
        with self._write() as db:
            return db.execute("UPDATE series SET state = ?, updated = ? WHERE state = ?", (QUEUED, time.time(), RUNNING)).rowcount

    def job(self, uid: str) -> SeriesJob | None:
        row = self._db().execute("SELECT * FROM series WHERE uid = ?", (uid,)).fetchone()
        return SeriesJob(**dict(row)) if row is not None else None

    def jobs(self, states: tuple[str, ...] = STATES) -> list[SeriesJob]:
        marks = ",".join("?" * len(states))
        rows = self._db().execute(f"SELECT * FROM series WHERE state IN ({marks}) ORDER BY first_received", states)
        return [SeriesJob(**dict(row)) for row in rows]

    # --- deliveries -----------------------------------------------------------------------------

    def add_deliveries(self, series_uid: str, destinations: list[str], objects: dict[str, Path]) -> None:
        """Plan sending each of `objects` (SOP Instance UID -> file) to each destination; a row
        already `sent` for the same object stays sent (a re-run makes objects with the same UIDs)."""
        with self._write() as db:
            for destination in destinations:
                for sop_uid, path in objects.items():
                    db.execute("INSERT INTO deliveries (series_uid, destination, sop_uid, path) VALUES (?, ?, ?, ?) "
                               "ON CONFLICT (series_uid, destination, sop_uid) DO UPDATE SET path = excluded.path, "
                               "state = CASE WHEN deliveries.state = 'sent' THEN 'sent' ELSE 'pending' END, "
                               "attempts = 0, not_before = 0, reason = ''",
                               (series_uid, destination, sop_uid, str(path)))

    def pending_deliveries(self, now: float | None = None) -> list[sqlite3.Row]:
        now = time.time() if now is None else now
        return list(self._db().execute(
            "SELECT d.* FROM deliveries d JOIN series s ON s.uid = d.series_uid WHERE d.state = 'pending' AND d.not_before <= ? "
            "AND s.state = ? ORDER BY d.series_uid, d.destination", (now, SENDING)))

    def delivered(self, series_uid: str, destination: str, sop_uid: str) -> None:
        with self._write() as db:
            db.execute("UPDATE deliveries SET state = 'sent', sent = ?, reason = '' WHERE series_uid = ? AND destination = ? AND sop_uid = ?",
                       (time.time(), series_uid, destination, sop_uid))
            left = db.execute("SELECT COUNT(*) FROM deliveries WHERE series_uid = ? AND state != 'sent'", (series_uid,)).fetchone()[0]
            if left == 0:
                db.execute("UPDATE series SET state = ?, reason = '', finished = ?, updated = ? WHERE uid = ? AND state = ?",
                           (SENT, time.time(), time.time(), series_uid, SENDING))

    def delivery_failed(self, series_uid: str, destination: str, sop_uid: str, reason: str, retry_at: float) -> None:
        with self._write() as db:
            db.execute("UPDATE deliveries SET attempts = attempts + 1, not_before = ?, reason = ? "
                       "WHERE series_uid = ? AND destination = ? AND sop_uid = ?", (retry_at, reason, series_uid, destination, sop_uid))
            db.execute("UPDATE series SET reason = ?, updated = ? WHERE uid = ?", (f"{destination}: {reason}", time.time(), series_uid))

    def deliveries(self, series_uid: str | None = None) -> list[sqlite3.Row]:
        if series_uid is None:
            return list(self._db().execute("SELECT * FROM deliveries ORDER BY series_uid"))
        return list(self._db().execute("SELECT * FROM deliveries WHERE series_uid = ?", (series_uid,)))

    def counts(self) -> dict[str, int]:
        rows = self._db().execute("SELECT state, COUNT(*) FROM series GROUP BY state")
        return {state: 0 for state in STATES} | {row[0]: row[1] for row in rows}
