"""Child processes that must end when told, with everything they started (Linux).

Work that can hang beyond any library timeout (a browser waiting on a page that never yields, a
job stuck past its deadline) runs in a child process; the parent ends it with `kill_tree`.
Playwright starts Chromium in a process group of its own, so killing the child's group is not
enough: the tree is found through /proc parent links, and every process in it is stopped before
any is killed, so that none can fork or be re-parented away while the tree is being collected.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections import defaultdict
from pathlib import Path

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Orphans of this process's descendants are re-parented to it instead of to init, so they
    stay in its tree for `kill_tree` (a browser whose driver died, a daemonised helper)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...); None once gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    return stat[stat.rindex(")") + 2 :].split()


def _children() -> dict[int, list[int]]:
    by_parent: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            by_parent[int(fields[1])].append(int(entry.name))
    return by_parent


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (not `pid` itself)."""
    by_parent = _children()
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in by_parent.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def kill_tree(pid: int, *, wait_s: float = 10.0) -> None:
    """SIGKILL `pid` and all its descendants, whatever process group they moved to, and wait
    (at most `wait_s`) until each has ended: a big process takes a while to die."""
    stopped: set[int] = set()
    while True:
        fresh = ({pid} | descendants(pid)) - stopped
        if not fresh:
            break
        for proc in fresh:
            _signal(proc, signal.SIGSTOP)
        stopped |= fresh
    for proc in stopped:
        _signal(proc, signal.SIGKILL)
    deadline = time.monotonic() + wait_s
    for proc in stopped:
        # Ended = a zombie (its parent has yet to collect it) or gone.
        while (fields := _stat(proc)) is not None and fields[0] != "Z":
            if time.monotonic() > deadline:
                return
            time.sleep(0.005)
