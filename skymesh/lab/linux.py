"""The two Linux calls the lab makes through libc: join a network namespace (``setns(2)``) and
ask for a signal when the parent dies (``prctl(PR_SET_PDEATHSIG)``)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from typing import Any

__all__ = ["can_die_with_parent", "die_with_parent", "join_netns"]

_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1

_libc: Any = None
_PRCTL: Any = None
if sys.platform.startswith("linux"):
    _libc_name = ctypes.util.find_library("c")
    if _libc_name:
        _libc = ctypes.CDLL(_libc_name, use_errno=True)
        _PRCTL = _libc.prctl  # resolved here: the child must not dlopen between fork and exec


def join_netns(netns: str) -> None:
    """Move the calling thread into the named network namespace ``/var/run/netns/<netns>``.

    Raises ``OSError`` when it cannot (no such namespace, not root, not Linux).
    """
    fd = os.open(f"/var/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc is None or _libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno() if _libc is not None else 0
            raise OSError(err, f"setns into {netns}: {os.strerror(err)}")
    finally:
        os.close(fd)


def can_die_with_parent() -> bool:
    """Whether :func:`die_with_parent` works here."""
    return _PRCTL is not None


def die_with_parent() -> None:
    """SIGTERM for this process when the thread that forked it exits; a ``preexec_fn``: it runs in
    the child between fork and exec, so it calls only what was resolved at import."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
