"""Watching the processes a test starts: every Chromium must be gone when the test ends."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psutil


@contextmanager
def browsers_watched() -> Iterator[set[int]]:
    """Collect every Chromium process this test process starts (children, grandchildren...);
    afterwards none may be alive."""
    seen: dict[int, psutil.Process] = {}
    done = threading.Event()

    def watch() -> None:
        me = psutil.Process()
        while not done.wait(0.02):
            for child in me.children(recursive=True):
                try:
                    if "chrom" in child.name().lower():
                        seen.setdefault(child.pid, child)
                except psutil.NoSuchProcess:
                    pass

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    pids: set[int] = set()
    try:
        yield pids
    finally:
        done.set()
        watcher.join()
        pids.update(seen)
    alive = browsers_alive(list(seen.values()))
    assert not alive, f"Chromium processes left running: {alive}"


def browsers_alive(procs: list[psutil.Process]) -> list[int]:
    """The pids of `procs` still running. A zombie has ended (only its parent has not collected
    it yet), and a pid now held by another process (other tests start Chromium too) is not ours:
    `is_running` compares the start time."""
    alive = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc.pid)
        except psutil.NoSuchProcess:
            pass
    return alive
