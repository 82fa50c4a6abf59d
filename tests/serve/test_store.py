"""The durable queue: FIFO claims, and recovery after a crash leaves no job silently lost."""

import sqlite3
import threading
import time

import pytest

from newbie.serve.store import (
    BUSY_TIMEOUT_S,
    CANCELLED,
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    JobStore,
    StoreError,
)


def test_claim_is_fifo_and_each_job_is_claimed_once(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    ids = [store.add({"k": i}, 1).id for i in range(3)]
    claimed = [store.claim() for _ in range(4)]
    assert [j.id for j in claimed[:3]] == ids and claimed[3] is None
    assert all(j.state == RUNNING and j.attempts == 1 for j in claimed[:3])


def test_an_accepted_job_is_on_disk_before_add_returns(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    job = store.add({"prompt": "x"}, 2)
    # another connection (another process after a crash) sees it at once
    row = (
        sqlite3.connect(tmp_path / "jobs.sqlite3")
        .execute("SELECT state, n FROM jobs WHERE id = ?", (job.id,))
        .fetchone()
    )
    assert row == (QUEUED, 2)


def test_recover_requeues_once_then_fails_with_a_reason(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    job = store.add({}, 1)
    waiting = store.add({}, 1)
    store.claim()
    store.close()  # "crash" while running
    store = JobStore(path)
    notes = store.recover()
    assert store.get(job.id).state == QUEUED and store.get(waiting.id).state == QUEUED
    assert len(notes) == 1 and "requeued" in notes[0]
    assert store.claim().id == job.id  # still first in line
    store.close()  # crashes again on the same job
    store = JobStore(path)
    store.recover()
    failed = store.get(job.id)
    assert failed.state == FAILED and "2 times" in failed.error
    assert store.get(waiting.id).state == QUEUED


def test_cancel_queued_at_once_running_by_flag_and_recover_honours_it(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    running, queued = store.add({}, 1), store.add({}, 1)
    store.claim()
    assert store.cancel(queued.id) == CANCELLED
    assert store.cancel(running.id) == RUNNING and store.get(running.id).cancel_requested
    assert store.cancel("0" * 32) is None
    store.close()
    store = JobStore(path)
    store.recover()
    assert store.get(running.id).state == CANCELLED


def test_requeue_after_clean_shutdown_does_not_count_an_attempt(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    job = store.add({}, 1)
    store.claim()
    store.requeue(job.id)
    again = store.claim()
    assert again.id == job.id and again.attempts == 1
    store.finish(job.id, DONE, seconds=1.5)
    assert store.counts()[DONE] == 1 and store.get(job.id).seconds == 1.5


def test_a_row_with_unreadable_params_is_failed_with_a_reason_and_skipped(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    bad, good = store.add({}, 1), store.add({"steps": 1}, 1)
    for text in ("{not json", "[1, 2]"):
        sqlite3.connect(path).execute(
            "UPDATE jobs SET params = ? WHERE id = ?", (text, bad.id)
        ).connection.commit()
        assert store.get(bad.id).params == {}  # readable for GET, never a 500
    assert store.claim().id == good.id
    failed = store.get(bad.id)
    assert failed.state == FAILED and "unreadable" in failed.error


def test_an_emptied_or_foreign_or_damaged_database_is_refused_not_replaced(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    path.touch()  # a truncated file: starting empty would lose every job silently
    with pytest.raises(StoreError, match="empty"):
        JobStore(path)
    assert path.stat().st_size == 0
    path.unlink()
    JobStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE jobs")
    with pytest.raises(StoreError, match="no jobs table"):
        JobStore(path)
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    with pytest.raises(StoreError, match="cannot be opened|damaged"):
        JobStore(path)


def test_a_corrupted_page_is_found_at_start(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    for i in range(300):
        store.add({"prompt": "x" * 200, "i": i}, 1)
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    data = bytearray(path.read_bytes())
    for page in range(3, 8):  # scribble over b-tree page headers (the page type and cell counts)
        data[4096 * page : 4096 * page + 8] = b"\x7f" * 8
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="damaged|cannot be opened"):
        JobStore(path)


def test_a_lock_held_by_another_process_is_waited_for(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")
    threading.Timer(0.5, lambda: other.execute("COMMIT")).start()
    t0 = time.monotonic()
    store.add({"steps": 1}, 1)  # without a busy timeout: "database is locked" at once
    assert 0.3 < time.monotonic() - t0 < BUSY_TIMEOUT_S


def test_purge_deletes_only_finished_jobs_past_the_time(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    old, queued, running = store.add({}, 1), store.add({}, 1), store.add({}, 1)
    for _ in (old, queued, running):
        assert store.claim() is not None
    store.finish(old.id, DONE)
    store.requeue(queued.id)
    assert store.purge(time.time() - 60) == []
    assert store.purge(time.time() + 1) == [old.id]
    assert store.get(old.id) is None and store.get(queued.id) and store.get(running.id)
