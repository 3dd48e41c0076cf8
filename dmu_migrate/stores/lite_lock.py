"""Who holds a Milvus Lite file: the one-line answer when a second process cannot open it.

Milvus Lite takes an exclusive ``flock`` on ``<file>.db/LOCK`` for as long as a
process has the file open; a second process gets "Open local milvus failed" and
a logged traceback. Here the lock is probed, and on Linux its holder is read
from /proc/locks, so the message can say which process to wait for.
"""

from __future__ import annotations

import os

from dmu_migrate.stores.base import redact


def locked(path: str) -> bool:
    """Whether a process holds the Milvus Lite file (its data directory's LOCK)."""
    import fcntl  # Milvus Lite itself runs on Unix only

    lock = os.path.join(path, "LOCK")
    if not os.path.exists(lock):
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops a lock we took
    return False


def holder(path: str) -> int | None:
    """The id of the process holding the lock, where the system says (Linux); else None."""
    try:
        st = os.stat(os.path.join(path, "LOCK"))
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 4242 00:2a:1234 0 EOF" (device numbers in hex)
        parts = line.split()
        if len(parts) < 6 or parts[1] != "FLOCK":  # "->" marks a waiter, not the holder
            continue
        try:
            major, minor, inode = parts[5].split(":")
            if int(inode) == st.st_ino and (int(major, 16), int(minor, 16)) == (
                os.major(st.st_dev),
                os.minor(st.st_dev),
            ):
                return int(parts[4])
        except ValueError:
            continue
    return None


def _command(pid: int) -> str:
    """The start of the holder's command line: its program and subcommand, never its options.

    Options stop the text: another process's ``--token`` must not reach our messages.
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = [w.decode(errors="replace") for w in f.read().split(b"\0") if w]
    except OSError:
        return ""
    shown: list[str] = []
    for word in words[:4]:
        if word.startswith("--"):
            break
        word = " ".join(word.split())
        shown.append(word if len(word) <= 40 else word[:37] + "...")
    return redact(" ".join(shown))


def in_use(path: str, shown: str) -> str:
    """The message for a Lite file another process holds (one process shares its own)."""
    pid = holder(path)
    who = f"process {pid}" if pid else "another process"
    command = _command(pid) if pid else ""
    if command:
        who += f" ({command})"
    return (
        f"Milvus Lite file '{shown}' is in use by {who}; a Lite file opens in one process at a "
        f"time: wait for that process to finish (or stop it), then run again"
    )
