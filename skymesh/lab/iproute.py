"""The ``ip`` commands the lab runs: links and addresses in a namespace, the named namespaces, and
what runs in one. Every command is bounded (:func:`~skymesh.lab.processes.run`)."""

from __future__ import annotations

import subprocess

from .processes import run

__all__ = ["ip", "list_netns", "netns_pids", "root_links"]


def ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ip [-n ns] args...``; :class:`~skymesh.lab.errors.LabError` on failure if ``check``."""
    return run(["ip", *(["-n", ns] if ns else []), *args], check=check)


def list_netns() -> list[str]:
    """Names of every named network namespace (``ip netns list``)."""
    res = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in res.stdout.splitlines() if line.strip()]


def netns_pids(ns: str) -> list[int]:
    """Pids of the processes in namespace ``ns`` (``ip netns pids``); [] if it is gone."""
    res = run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in res.stdout.split() if p.isdigit()]


def root_links(prefix: str) -> list[str]:
    """Links in the root namespace whose names start with ``prefix``."""
    res = run(["ip", "-o", "link", "show"], check=False)
    names = [line.split(":")[1].strip().split("@")[0] for line in res.stdout.splitlines()
             if line.count(":") >= 2]
    return [n for n in names if n.startswith(prefix)]
