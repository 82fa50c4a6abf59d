"""The durable queue: FIFO claims, and recovery after a crash leaves no job silently lost."""

import sqlite3

from newbie.serve.store import CANCELLED, DONE, FAILED, QUEUED, RUNNING, JobStore


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
