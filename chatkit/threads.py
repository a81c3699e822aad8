"""Threads kept for reuse: the server's readers run on them.

Starting a thread costs about 250 µs of CPU on the 2-core machine the benchmarks run on
(``clone``, a stack, Python's thread state, and ``Thread.start`` waiting for the new
thread to run): a third of what a whole login cycle (connect, log in, quit) costs the
server, and what a parked client's next line would pay to get its reader back. So a
thread whose task is done waits a while for the next one instead of ending.

A :class:`ThreadPool` has no queue of tasks: :meth:`ThreadPool.run` hands the task to
an idle thread or starts one, at once, so no task ever waits for another to finish (a
reader runs for as long as its connection lives).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

__all__ = ["IDLE_NAME", "KEEP_IDLE", "LINGER", "Done", "ThreadPool"]

log = logging.getLogger(__name__)

KEEP_IDLE = 32  # idle threads kept at most; one more ends instead of waiting
LINGER = 10.0  # seconds an idle thread waits for a task before it ends
IDLE_NAME = "chatkit-idle"  # an idle thread's name (it serves no connection)

Task = tuple[str, Callable[[], None]]


class Done:
    """Set once a task given to :meth:`ThreadPool.run` has returned: what
    ``Thread.join`` and ``Thread.is_alive`` told of a thread that ran one task.

    One lock, not a ``threading.Event`` (a lock and a ``Condition``): one is made
    for every connection, and an ``Event`` costs about 17 times as much to make and
    set (2.7 µs against 0.16).
    """

    __slots__ = ("_lock", "_set")

    def __init__(self) -> None:
        # Held from birth until set(): join() waits to acquire it. Guards nothing else.
        self._lock = threading.Lock()
        self._lock.acquire()
        self._set = False  # not the lock's state: a joiner holds it for a moment

    def join(self, timeout: float | None = None) -> None:
        """Wait until the task has returned, or ``timeout`` seconds."""
        if self._lock.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
            self._lock.release()  # for the next joiner

    def is_alive(self) -> bool:
        """True while the task runs."""
        return not self._set

    def set(self) -> None:
        """Called once, by the thread that ran the task."""
        self._set = True
        self._lock.release()


class ThreadPool:
    """Daemon threads that run one task each at a time, and wait, idle, for the next.

    :param keep: Idle threads kept at most.
    :param linger: Seconds an idle thread waits for a task before it ends.
    """

    def __init__(self, keep: int = KEEP_IDLE, linger: float = LINGER) -> None:
        self.keep = keep
        self.linger = linger
        # Synchronizes _idle and _closed: held for a list operation only, never while
        # waiting or starting a thread.
        self._lock = threading.Lock()
        # Each idle thread's inbox: a task, or None to end. A SimpleQueue is the cheapest
        # way to block a thread until another hands it something, with a timeout.
        self._idle: list[queue.SimpleQueue[Task | None]] = []
        self._closed = False
        self.started = 0
        """Threads started (a metric; under the lock)."""

    @property
    def idle(self) -> int:
        """Threads waiting for a task now."""
        return len(self._idle)

    def run(self, name: str, task: Callable[[], None], done: Done | None = None) -> Done:
        """Run ``task`` on a thread named ``name``: an idle one, or a new one.

        Returns at once, with ``done`` (a new :class:`Done` if none is given), which
        the thread sets when ``task`` returns. ``task`` must catch its own errors (one
        that escapes is logged). Raises ``RuntimeError`` if no thread is idle and no
        new one can be started (the process's limit): ``task`` then never runs.
        """
        done = Done() if done is None else done
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
            if inbox is None:
                self.started += 1
        job = (name, _setting(task, done))
        if inbox is not None:
            inbox.put(job)
            return done
        thread = threading.Thread(target=self._work, args=(job,), name=name, daemon=True)
        try:
            thread.start()
        except BaseException:  # RuntimeError: the process may start no more threads
            with self._lock:
                self.started -= 1
            raise
        return done

    def close(self) -> None:
        """End the idle threads and those that finish their task from now on."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for inbox in idle:
            inbox.put(None)

    def _work(self, job: Task) -> None:
        """Thread entry point: run the task, then wait for the next one."""
        thread = threading.current_thread()
        inbox: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        next_job: Task | None = job
        while next_job is not None:
            thread.name, task = next_job
            task()
            thread.name = IDLE_NAME
            with self._lock:
                if self._closed or len(self._idle) >= self.keep:
                    return
                self._idle.append(inbox)
            try:
                next_job = inbox.get(timeout=self.linger)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:
                        self._idle.remove(inbox)
                        return
                # run() took this inbox between the timeout and the lock: its task is
                # in it, or about to be.
                next_job = inbox.get()


def _setting(task: Callable[[], None], done: Done) -> Callable[[], None]:
    """``task``, then ``done`` set, whatever happens."""

    def run() -> None:
        try:
            task()
        except Exception:
            log.error("a pooled thread's task failed", exc_info=True)
        finally:
            done.set()

    return run
