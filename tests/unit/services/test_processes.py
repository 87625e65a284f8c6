"""kill_tree ends a process and every descendant, even one that left its process group."""

from __future__ import annotations

import os
import subprocess
import time

import psutil

from services.processes import descendants, kill_tree


def test_kill_tree_ends_descendants_in_a_session_of_their_own() -> None:
    # A grandchild in a new session, as Playwright starts Chromium: the parent's group is not it.
    proc = subprocess.Popen(["sh", "-c", "setsid sleep 300 & sleep 300"])
    deadline = time.monotonic() + 5
    while len(descendants(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    below = [psutil.Process(pid) for pid in descendants(proc.pid)]
    assert len(below) == 2
    assert any(os.getsid(p.pid) != os.getsid(proc.pid) for p in below)

    kill_tree(proc.pid)

    assert proc.wait(timeout=5) == -9
    for p in below:
        assert not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
