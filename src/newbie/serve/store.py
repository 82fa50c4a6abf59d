"""The durable job queue: one SQLite file. A job is committed here before the server answers 202/200,
so a crash after that can delay it but never lose it (see `recover`)."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from newbie.errors import NewbieError

log = logging.getLogger("newbie.serve")
QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINAL = (DONE, FAILED, CANCELLED)
# A job that was running when the server died this many times is failed instead of retried: it may be
# the job that kills the server (out of memory, a driver crash).
MAX_ATTEMPTS = 2
# How long one statement waits for a lock held by another process (a backup, an operator's sqlite3) before
# it raises "database is locked"; the worker then retries with backoff (worker.py), it never dies of it.
BUSY_TIMEOUT_S = 5.0
COLUMNS = {"seq", "id", "state", "params", "n", "created", "started", "finished", "attempts"}
COLUMNS |= {"cancel_requested", "error", "seconds"}


class StoreError(NewbieError):
    """The job database cannot be used as it is (corrupt, emptied, not ours): refused, never replaced."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- FIFO order
    id TEXT UNIQUE NOT NULL,
    state TEXT NOT NULL,
    params TEXT NOT NULL,                   -- JSON of the validated request, seed fixed at acceptance
    n INTEGER NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    seconds REAL                            -- generation time of the whole job
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
"""


@dataclass
class Job:
    id: str
    state: str
    params: dict
    n: int
    created: float
    started: float | None = None
    finished: float | None = None
    attempts: int = 0
    cancel_requested: bool = False
    error: str | None = None
    seconds: float | None = None


def _params(text) -> dict | None:
    """A row's parameters, or None when they are not a JSON object: such a row is failed with a reason by
    claim(), and shown with empty parameters by get()."""
    try:
        params = json.loads(text)
        json.dumps(params, ensure_ascii=False).encode()  # a lone surrogate would fail every reply
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        return None
    return params if isinstance(params, dict) else None


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        state=row["state"],
        params=_params(row["params"]) or {},
        n=row["n"],
        created=row["created"],
        started=row["started"],
        finished=row["finished"],
        attempts=row["attempts"],
        cancel_requested=bool(row["cancel_requested"]),
        error=row["error"],
        seconds=row["seconds"],
    )


_MOVE_AWAY = "restore it from a backup, or move it away to start with an empty queue"


class JobStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # one connection shared by the API threads and the workers, serialized by a lock; every call is tiny
        existed = self.path.exists()
        if existed and self.path.stat().st_size == 0:
            raise StoreError(
                f"the job database {self.path} is empty (0 bytes): its jobs are lost or it was truncated; "
                "restore it from a backup or move it away to start with an empty queue"
            )
        self._db = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None
        )
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        try:
            with self._lock:
                if existed:
                    self._check()
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")  # the commit is on disk before the reply goes out
                self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise StoreError(f"the job database {self.path} cannot be opened ({e}); {_MOVE_AWAY}") from None
        except StoreError:
            self._db.close()
            raise

    def _check(self) -> None:
        """An existing file must be a healthy job database: a damaged one is refused at start (not found
        later as a 500 on every request), and one without the jobs table is not silently started empty."""
        problems = [r[0] for r in self._db.execute("PRAGMA quick_check(5)").fetchall()]
        if problems != ["ok"]:
            raise StoreError(f"the job database {self.path} is damaged ({problems[0]}); {_MOVE_AWAY}")
        names = {r[1] for r in self._db.execute("PRAGMA table_info(jobs)").fetchall()}
        if not names:
            raise StoreError(f"the job database {self.path} has no jobs table; {_MOVE_AWAY}")
        if not COLUMNS <= names:
            missing = ", ".join(sorted(COLUMNS - names))
            raise StoreError(f"the job database {self.path} lacks columns ({missing}); {_MOVE_AWAY}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def add(self, params: dict, n: int, job_id: str | None = None) -> Job:
        job = Job(id=job_id or uuid.uuid4().hex, state=QUEUED, params=params, n=n, created=time.time())
        self._write(
            "INSERT INTO jobs (id, state, params, n, created) VALUES (?, ?, ?, ?, ?)",
            (job.id, job.state, json.dumps(params, sort_keys=True), n, job.created),
        )
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def claim(self) -> Job | None:
        """The oldest queued job, now running (atomic: two workers never get the same job). A row whose
        parameters cannot be read is failed with the reason and passed over: one bad row never blocks the
        queue."""
        while True:
            with self._lock:
                row = self._db.execute(
                    "UPDATE jobs SET state = ?, started = ?, attempts = attempts + 1 "
                    "WHERE seq = (SELECT seq FROM jobs WHERE state = ? ORDER BY seq LIMIT 1) RETURNING *",
                    (RUNNING, time.time(), QUEUED),
                ).fetchone()
                if row is None:
                    return None
                if _params(row["params"]) is not None:
                    return _job(row)
                self._db.execute(
                    "UPDATE jobs SET state = ?, finished = ?, error = ? WHERE seq = ?",
                    (
                        FAILED,
                        time.time(),
                        "its stored parameters are unreadable; submit it again",
                        row["seq"],
                    ),
                )
            log.error("job %s failed: its stored parameters are unreadable", row["id"])

    def finish(self, job_id: str, state: str, error: str | None = None, seconds: float | None = None) -> None:
        assert state in FINAL
        self._write(
            "UPDATE jobs SET state = ?, finished = ?, error = ?, seconds = ? WHERE id = ?",
            (state, time.time(), error, seconds, job_id),
        )

    def requeue(self, job_id: str) -> None:
        """Back to the queue without counting the attempt (a clean shutdown interrupted it)."""
        self._write(
            "UPDATE jobs SET state = ?, started = NULL, attempts = attempts - 1 WHERE id = ? AND state = ?",
            (QUEUED, job_id, RUNNING),
        )

    def cancel(self, job_id: str) -> str | None:
        """Cancel a queued job at once; flag a running one for its worker. Returns the state after the call
        (None: no such job)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row is None:
                    return None
                if row["state"] == QUEUED:
                    self._db.execute(
                        "UPDATE jobs SET state = ?, finished = ?, error = ? WHERE id = ?",
                        (CANCELLED, time.time(), "cancelled before it started", job_id),
                    )
                    state = CANCELLED
                else:
                    if row["state"] == RUNNING:
                        self._db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
                    state = row["state"]
            finally:
                self._db.execute("COMMIT")
        return state

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) AS c FROM jobs GROUP BY state").fetchall()
        out = {s: 0 for s in (QUEUED, RUNNING, *FINAL)}
        out.update({r["state"]: r["c"] for r in rows})
        return out

    def purge(self, finished_before: float) -> list[str]:
        """Delete the rows of jobs that finished before this time; returns their ids (their files are the
        service's to remove)."""
        with self._lock:
            rows = self._db.execute(
                f"DELETE FROM jobs WHERE state IN ({','.join('?' * len(FINAL))}) AND finished < ? RETURNING id",
                (*FINAL, finished_before),
            ).fetchall()
        return [r["id"] for r in rows]

    def recover(self) -> list[str]:
        """At startup: jobs left 'running' by a crash go back to the queue, or fail with a reason after
        MAX_ATTEMPTS; a cancel asked for before the crash is honoured. Returns one line per changed job."""
        notes = []
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs WHERE state = ?", (RUNNING,)).fetchall()
            for row in rows:
                job = _job(row)
                if job.cancel_requested:
                    state, error = CANCELLED, "cancelled; the server stopped before the job did"
                elif job.attempts >= MAX_ATTEMPTS:
                    state, error = (
                        FAILED,
                        (
                            f"the server stopped while this job was running ({job.attempts} times); "
                            "not retried again"
                        ),
                    )
                else:
                    self._db.execute(
                        "UPDATE jobs SET state = ?, started = NULL WHERE id = ?", (QUEUED, job.id)
                    )
                    notes.append(f"{job.id}: requeued after an interrupted run")
                    continue
                self._db.execute(
                    "UPDATE jobs SET state = ?, finished = ?, error = ? WHERE id = ?",
                    (state, time.time(), error, job.id),
                )
                notes.append(f"{job.id}: {state} ({error})")
        return notes
