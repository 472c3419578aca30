"""Durable job queue in SQLite (WAL, ``synchronous=FULL``): studies, instances, outputs, deliveries.

Study states::

    receiving --idle timeout--> queued --claimed--> running --SR--> done
        ^                         ^                    |--non-chest--> rejected (terminal)
        |                         '----retry-----------|--error/timeout, attempts < max
        '--- a new instance of a finished study        '--error/timeout, attempts == max--> failed

Every acknowledged instance has a row here before Success is returned, so a restart resumes all
work: :meth:`JobQueue.recover` re-queues running studies and restarts idle timers; pending
deliveries simply stay pending. One connection per thread; each write is one short transaction.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,             -- store.study_key(calling AE, StudyInstanceUID)
    calling_ae TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    state TEXT NOT NULL,
    n_instances INTEGER NOT NULL DEFAULT 0,
    first_received REAL NOT NULL,
    last_received REAL NOT NULL,
    queued_at REAL,
    not_before REAL NOT NULL DEFAULT 0,   -- earliest start of the next run (retry delay)
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,  -- failed or running runs since the last success
    runs INTEGER NOT NULL DEFAULT 0,      -- runs started in total (names run folders)
    dirty INTEGER NOT NULL DEFAULT 0,     -- instances arrived while running: run again afterwards
    reason TEXT
);
CREATE TABLE IF NOT EXISTS instances (
    study_id INTEGER NOT NULL REFERENCES studies(id),
    sop_uid TEXT NOT NULL,
    sop_class TEXT NOT NULL,
    path TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (study_id, sop_uid)
);
CREATE TABLE IF NOT EXISTS outputs (
    id INTEGER PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES studies(id),
    kind TEXT NOT NULL,                   -- "sr", "pdf" or "sc" (attention map)
    path TEXT NOT NULL,
    sop_uid TEXT NOT NULL,
    sop_class TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    output_id INTEGER NOT NULL REFERENCES outputs(id),
    destination TEXT NOT NULL,
    state TEXT NOT NULL,                  -- pending | delivered | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    deadline REAL NOT NULL,
    last_error TEXT,
    delivered_at REAL,
    PRIMARY KEY (output_id, destination)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    study_id INTEGER NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,                   -- failure | rejection | timeout | moved_to_failed | ...
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS studies_state ON studies(state);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(destination, state, next_attempt);
"""

STATES = ("receiving", "queued", "running", "done", "rejected", "failed")
INPUT_DOMAIN_EVENT = "input_domain"  # event kind whose detail is a run's input-domain verdict


@dataclass(frozen=True)
class Job:
    """One run of the app on one study."""

    study_id: int
    key: str
    run: str  # run folder name, unique per study: "r<runs>"
    attempt: int
    n_instances: int
    first_received: float


@dataclass(frozen=True)
class Delivery:
    """One output file to send to one destination."""

    output_id: int
    study_id: int
    path: Path
    sop_uid: str
    sop_class: str
    attempts: int
    deadline: float
    first_received: float


@dataclass(frozen=True)
class AddResult:
    """Outcome of :meth:`JobQueue.add_instance`."""

    study_id: int
    new_study: bool
    new_instance: bool


class JobQueue:
    """SQLite-backed queue shared by the SCP threads, the scheduler and the exporters."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._conn().executescript(SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=60000")
            self._local.conn = conn
        return conn

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on error)."""
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # --- ingest -----------------------------------------------------------------------------------
    def add_instance(
        self, key: str, calling_ae: str, study_uid: str, sop_uid: str, sop_class: str, path: Path
    ) -> AddResult:
        """Record a durably stored instance; a new instance (re)opens its study for grouping."""
        now = time.time()
        with self.tx() as db:
            row = db.execute("SELECT id, state FROM studies WHERE key = ?", (key,)).fetchone()
            new_study = row is None
            if new_study:
                cur = db.execute(
                    "INSERT INTO studies (key, calling_ae, study_uid, state, first_received, last_received)"
                    " VALUES (?, ?, ?, 'receiving', ?, ?)",
                    (key, calling_ae, study_uid, now, now),
                )
                study_id = int(cur.lastrowid)
            else:
                study_id = int(row["id"])
            cur = db.execute(
                "INSERT OR IGNORE INTO instances (study_id, sop_uid, sop_class, path, received_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (study_id, sop_uid, sop_class, str(path), now),
            )
            new_instance = cur.rowcount == 1
            if new_instance:
                state = "receiving" if new_study else row["state"]
                if state == "running":
                    db.execute(
                        "UPDATE studies SET dirty = 1, last_received = ?,"
                        " n_instances = n_instances + 1 WHERE id = ?",
                        (now, study_id),
                    )
                else:
                    reopen = state in ("done", "rejected", "failed")
                    db.execute(
                        "UPDATE studies SET state = 'receiving', last_received = ?,"
                        " n_instances = n_instances + 1,"
                        " attempts = CASE WHEN ? THEN 0 ELSE attempts END,"
                        " reason = CASE WHEN ? THEN NULL ELSE reason END WHERE id = ?",
                        (now, reopen, reopen, study_id),
                    )
        return AddResult(study_id, new_study, new_instance)

    # --- scheduling -------------------------------------------------------------------------------
    def promote_idle(self, idle_s: float, busy: Iterable[int] = ()) -> list[int]:
        """Queue studies idle for ``idle_s`` seconds and not in ``busy`` (ids with an open association)."""
        now = time.time()
        busy = set(busy)
        with self.tx() as db:
            rows = db.execute(
                "SELECT id FROM studies WHERE state = 'receiving' AND last_received <= ?", (now - idle_s,)
            ).fetchall()
            ids = [int(r["id"]) for r in rows if int(r["id"]) not in busy]
            db.executemany(
                "UPDATE studies SET state = 'queued', queued_at = ? WHERE id = ?", [(now, i) for i in ids]
            )
        return ids

    def claim_next(self) -> Job | None:
        """Mark the oldest due queued study as running and return its job, or None."""
        now = time.time()
        with self.tx() as db:
            row = db.execute(
                "SELECT * FROM studies WHERE state = 'queued' AND not_before <= ?"
                " ORDER BY queued_at, id LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE studies SET state = 'running', started_at = ?, attempts = attempts + 1,"
                " runs = runs + 1, dirty = 0 WHERE id = ?",
                (now, row["id"]),
            )
        return Job(
            study_id=int(row["id"]),
            key=row["key"],
            run=f"r{int(row['runs']) + 1}",
            attempt=int(row["attempts"]) + 1,
            n_instances=int(row["n_instances"]),
            first_received=float(row["first_received"]),
        )

    def finish_done(
        self,
        study_id: int,
        outputs: list[tuple[str, Path, str, str]],
        destinations: Iterable[str],
        export_deadline_s: float,
    ) -> str:
        """Record a successful run: ``outputs`` are (kind, path, SOPInstanceUID, SOPClassUID).

        Creates one pending delivery per (output, destination). Returns the new study state
        ("done", or "receiving" when instances arrived during the run).
        """
        now = time.time()
        dests = list(destinations)
        with self.tx() as db:
            for kind, path, sop_uid, sop_class in outputs:
                cur = db.execute(
                    "INSERT INTO outputs (study_id, kind, path, sop_uid, sop_class, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (study_id, kind, str(path), sop_uid, sop_class, now),
                )
                db.executemany(
                    "INSERT INTO deliveries (output_id, destination, state, next_attempt, deadline)"
                    " VALUES (?, ?, 'pending', ?, ?)",
                    [(cur.lastrowid, d, now, now + export_deadline_s) for d in dests],
                )
            return self._finish(db, study_id, "done", None, now)

    def finish_rejected(self, study_id: int, reason: str) -> str:
        """Record a terminal rejection by the app (e.g. not a chest radiograph); not retried."""
        now = time.time()
        with self.tx() as db:
            self._event(db, study_id, "rejection", reason, now)
            return self._finish(db, study_id, "rejected", reason, now)

    def finish_failed(self, study_id: int, reason: str, max_attempts: int, retry_delay_s: float) -> str:
        """Record a failed run; re-queue with a delay or, after ``max_attempts``, mark it failed."""
        now = time.time()
        with self.tx() as db:
            row = db.execute("SELECT attempts FROM studies WHERE id = ?", (study_id,)).fetchone()
            attempts = int(row["attempts"])
            self._event(db, study_id, "failure", f"attempt {attempts}: {reason}", now)
            if attempts >= max_attempts:
                return self._finish(db, study_id, "failed", reason, now)
            db.execute(
                "UPDATE studies SET state = 'queued', queued_at = ?, not_before = ?, reason = ? WHERE id = ?",
                (now, now + retry_delay_s * attempts, reason, study_id),
            )
        return "queued"

    def requeue(self, study_id: int, reason: str) -> None:
        """Put a running study back in the queue without charging an attempt (shutdown, restart)."""
        with self.tx() as db:
            self._event(db, study_id, "requeued", reason, time.time())
            db.execute(
                "UPDATE studies SET state = 'queued', attempts = MAX(attempts - 1, 0) WHERE id = ?",
                (study_id,),
            )

    def _finish(
        self, db: sqlite3.Connection, study_id: int, state: str, reason: str | None, now: float
    ) -> str:
        succeeded = state == "done"  # a success resets the attempt count, also when a re-run follows
        dirty = db.execute("SELECT dirty FROM studies WHERE id = ?", (study_id,)).fetchone()["dirty"]
        if dirty:
            state, reason = "receiving", None
        db.execute(
            "UPDATE studies SET state = ?, reason = ?, finished_at = ?, dirty = 0,"
            " attempts = CASE WHEN ? THEN 0 ELSE attempts END WHERE id = ?",
            (state, reason, now, succeeded, study_id),
        )
        return state

    @staticmethod
    def _event(db: sqlite3.Connection, study_id: int, kind: str, detail: str, now: float) -> None:
        db.execute(
            "INSERT INTO events (study_id, at, kind, detail) VALUES (?, ?, ?, ?)",
            (study_id, now, kind, detail),
        )

    def add_event(self, study_id: int, kind: str, detail: str) -> None:
        """Append a line to a study's history."""
        with self.tx() as db:
            self._event(db, study_id, kind, detail, time.time())

    def recover(self) -> dict[str, int]:
        """After a restart: re-queue studies left running and restart the idle timers of receiving ones."""
        now = time.time()
        with self.tx() as db:
            running = db.execute("SELECT id FROM studies WHERE state = 'running'").fetchall()
            for r in running:
                self._event(db, int(r["id"]), "requeued", "node restarted during the run", now)
            db.execute(
                "UPDATE studies SET state = 'queued', queued_at = ?, attempts = MAX(attempts - 1, 0)"
                " WHERE state = 'running'",
                (now,),
            )
            receiving = db.execute(
                "UPDATE studies SET last_received = ? WHERE state = 'receiving'", (now,)
            ).rowcount
            pending = db.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'").fetchone()[0]
        return {"requeued": len(running), "receiving": receiving, "pending_deliveries": int(pending)}

    def study_key_of(self, study_id: int) -> str:
        """Folder key of a study."""
        return self._conn().execute("SELECT key FROM studies WHERE id = ?", (study_id,)).fetchone()["key"]

    # --- export -----------------------------------------------------------------------------------
    def due_deliveries(self, destination: str) -> dict[int, list[Delivery]]:
        """Pending deliveries to ``destination`` whose retry time has come, grouped by study id."""
        rows = (
            self._conn()
            .execute(
                "SELECT d.output_id, d.attempts, d.deadline, o.study_id, o.path, o.sop_uid, o.sop_class,"
                " s.first_received FROM deliveries d JOIN outputs o ON o.id = d.output_id"
                " JOIN studies s ON s.id = o.study_id"
                " WHERE d.destination = ? AND d.state = 'pending' AND d.next_attempt <= ?"
                " ORDER BY o.study_id, o.id",
                (destination, time.time()),
            )
            .fetchall()
        )
        out: dict[int, list[Delivery]] = {}
        for r in rows:
            out.setdefault(int(r["study_id"]), []).append(
                Delivery(
                    output_id=int(r["output_id"]),
                    study_id=int(r["study_id"]),
                    path=Path(r["path"]),
                    sop_uid=r["sop_uid"],
                    sop_class=r["sop_class"],
                    attempts=int(r["attempts"]),
                    deadline=float(r["deadline"]),
                    first_received=float(r["first_received"]),
                )
            )
        return out

    def mark_delivered(self, output_id: int, destination: str) -> None:
        """The destination confirmed the C-STORE (Success or a storage warning)."""
        now = time.time()
        with self.tx() as db:
            db.execute(
                "UPDATE deliveries SET state = 'delivered', delivered_at = ?, attempts = attempts + 1"
                " WHERE output_id = ? AND destination = ?",
                (now, output_id, destination),
            )

    def mark_retry(self, output_id: int, destination: str, error: str, backoff_s: float, max_s: float) -> str:
        """Record a failed attempt; schedule the next one with exponential backoff or give up at the deadline.

        Returns the new delivery state ("pending" or "failed").
        """
        now = time.time()
        with self.tx() as db:
            row = db.execute(
                "SELECT attempts, deadline FROM deliveries WHERE output_id = ? AND destination = ?",
                (output_id, destination),
            ).fetchone()
            attempts = int(row["attempts"]) + 1
            state = "failed" if now >= float(row["deadline"]) else "pending"
            delay = min(backoff_s * 2 ** (attempts - 1), max_s)
            db.execute(
                "UPDATE deliveries SET state = ?, attempts = ?, last_error = ?, next_attempt = ?"
                " WHERE output_id = ? AND destination = ?",
                (state, attempts, error, now + delay, output_id, destination),
            )
        return state

    def next_delivery_time(self, destination: str) -> float | None:
        """Earliest ``next_attempt`` of the destination's pending deliveries."""
        row = (
            self._conn()
            .execute(
                "SELECT MIN(next_attempt) FROM deliveries WHERE destination = ? AND state = 'pending'",
                (destination,),
            )
            .fetchone()
        )
        return None if row[0] is None else float(row[0])

    # --- reporting --------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Number of studies per state (every state present, zero included)."""
        rows = self._conn().execute("SELECT state, COUNT(*) FROM studies GROUP BY state").fetchall()
        out = dict.fromkeys(STATES, 0)
        out.update({r[0]: int(r[1]) for r in rows})
        return out

    def delivery_counts(self) -> dict[str, int]:
        """Number of deliveries per state."""
        rows = self._conn().execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state").fetchall()
        out = {"pending": 0, "delivered": 0, "failed": 0}
        out.update({r[0]: int(r[1]) for r in rows})
        return out

    def studies(self, states: Iterable[str] = STATES, limit: int = 100) -> list[dict[str, Any]]:
        """Rows of the most recent studies in ``states`` (newest first), as plain dicts."""
        states = list(states)
        marks = ",".join("?" * len(states))
        rows = (
            self._conn()
            .execute(
                f"SELECT * FROM studies WHERE state IN ({marks}) ORDER BY last_received DESC LIMIT ?",
                (*states, limit),
            )
            .fetchall()
        )
        return [dict(r) for r in rows]

    def deliveries(self, study_id: int | None = None) -> list[dict[str, Any]]:
        """Delivery rows (joined with their output), optionally of one study."""
        sql = (
            "SELECT d.*, o.study_id, o.kind, o.sop_uid, o.path FROM deliveries d"
            " JOIN outputs o ON o.id = d.output_id"
        )
        args: tuple[Any, ...] = ()
        if study_id is not None:
            sql += " WHERE o.study_id = ?"
            args = (study_id,)
        return [dict(r) for r in self._conn().execute(sql + " ORDER BY o.id", args).fetchall()]

    def events(self, study_id: int) -> list[dict[str, Any]]:
        """History lines of a study, oldest first."""
        rows = self._conn().execute("SELECT * FROM events WHERE study_id = ? ORDER BY id", (study_id,))
        return [dict(r) for r in rows.fetchall()]
