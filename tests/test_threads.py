"""chatkit.threads: a ThreadPool's threads run one task at a time and wait, idle, for
the next; at most `keep` wait, each for `linger` seconds."""

from __future__ import annotations

import logging
import threading

import pytest

from chatkit.testing import wait_until
from chatkit.threads import IDLE_NAME, ThreadPool


def test_a_finished_thread_runs_the_next_task_under_its_name() -> None:
    pool = ThreadPool()
    seen: list[tuple[int, str]] = []

    def task() -> None:
        thread = threading.current_thread()
        seen.append((thread.ident or 0, thread.name))

    first = pool.run("reader-a", task)
    first.join(5)
    assert not first.is_alive()
    wait_until(lambda: pool.idle == 1)
    idle = [t for t in threading.enumerate() if t.ident == seen[0][0]]
    assert [t.name for t in idle] == [IDLE_NAME] and idle[0].daemon
    pool.run("reader-b", task).join(5)
    assert seen == [(seen[0][0], "reader-a"), (seen[0][0], "reader-b")]
    assert pool.started == 1
    pool.close()


def test_tasks_never_wait_for_each_other() -> None:
    """No queue: while every thread is busy, a new task gets a new thread."""
    pool = ThreadPool()
    release = threading.Event()
    running = threading.Semaphore(0)

    def task() -> None:
        running.release()
        release.wait(5)

    done = [pool.run(f"t{i}", task) for i in range(5)]
    for _ in range(5):
        assert running.acquire(timeout=5)  # all five at once
    assert pool.started == 5 and all(d.is_alive() for d in done)
    release.set()
    for d in done:
        d.join(5)
    pool.close()


def _alive(threads: list[threading.Thread]) -> int:
    return sum(thread.is_alive() for thread in threads)


def test_at_most_keep_threads_wait_and_each_for_linger_seconds() -> None:
    pool = ThreadPool(keep=2, linger=2.0)  # (the state between lasts this long: seen if busy)
    release = threading.Event()
    threads: list[threading.Thread] = []

    def task() -> None:
        threads.append(threading.current_thread())
        release.wait(5)

    done = [pool.run(f"t{i}", task) for i in range(4)]
    wait_until(lambda: len(threads) == 4)
    release.set()
    for d in done:
        d.join(5)
    wait_until(lambda: pool.idle == 2 and _alive(threads) == 2)  # two more ended at once
    wait_until(lambda: pool.idle == 0 and _alive(threads) == 0)  # lingered, then ended
    pool.run("again", lambda: None).join(5)
    assert pool.started == 5
    pool.close()


def test_close_ends_idle_threads_and_those_that_finish_later() -> None:
    pool = ThreadPool()
    release = threading.Event()
    threads: list[threading.Thread] = []

    def task() -> None:
        threads.append(threading.current_thread())
        release.wait(5)

    busy = pool.run("busy", task)
    wait_until(lambda: len(threads) == 1)
    pool.run("idle", lambda: threads.append(threading.current_thread())).join(5)
    wait_until(lambda: pool.idle == 1)
    assert len(set(threads)) == 2
    pool.close()
    release.set()
    busy.join(5)
    wait_until(lambda: _alive(threads) == 0)
    assert pool.idle == 0


def test_a_task_that_raises_is_logged_and_its_thread_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = ThreadPool()

    def fail() -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="chatkit.threads"):
        done = pool.run("failing", fail)
        done.join(5)
    assert not done.is_alive()
    assert "task failed" in caplog.text and "boom" in caplog.text
    wait_until(lambda: pool.idle == 1)
    pool.run("next", lambda: None).join(5)
    assert pool.started == 1
    pool.close()
