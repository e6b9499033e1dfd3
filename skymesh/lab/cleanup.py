"""Removing a lab: everything a lab ``<prefix>`` made (namespaces, processes, WireGuard sockets,
links, temp dirs, its owner marker), what of it is left, and the labs whose owner died.

Each lab records its owner in ``/run/skymesh-lab/<prefix>.json`` (:func:`write_owner_marker`), so
:func:`cleanup_stale` removes only labs whose owning process is gone (``kill -9``), never those
of a run still going on in parallel.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import LabError
from .iproute import ip, list_netns, netns_pids, root_links
from .names import LAB_NETNS_RE, MARKER_DIR, PREFIX_RE, WG_RUN_DIR
from .processes import alive, cmdline, proc_stat, run, terminate

__all__ = ["cleanup_prefix", "cleanup_stale", "leftovers", "write_owner_marker"]


def write_owner_marker(prefix: str) -> None:
    """Record this process (pid and start time, which a reused pid does not share) as the owner of lab
    ``prefix``."""
    MARKER_DIR.mkdir(parents=True, exist_ok=True)
    st = proc_stat(os.getpid())
    (MARKER_DIR / f"{prefix}.json").write_text(json.dumps(
        {"pid": os.getpid(), "starttime": st[2] if st else None, "argv": sys.argv}))


def _prefix_processes(prefix: str) -> list[int]:
    """Live processes (not us) whose command line mentions ``prefix``: anything a lab started
    names its namespace, interface or temp dir."""
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me and prefix in cmdline(int(entry)) \
                and alive(int(entry)):
            out.append(int(entry))
    return out


def leftovers(prefix: str) -> list[str]:
    """What of lab ``prefix`` still exists: namespaces, processes, sockets, links, temp dirs."""
    found = []
    nss = [ns for ns in list_netns() if ns.startswith(prefix + "-")]
    if nss:
        found.append(f"namespaces {nss}")
    for ns in nss:
        pids = netns_pids(ns)
        if pids:
            found.append(f"processes in {ns}: " + ", ".join(f"{p} ({cmdline(p)[:80]})" for p in pids))
    procs = _prefix_processes(prefix)
    if procs:
        found.append("processes naming the lab: " + ", ".join(f"{p} ({cmdline(p)[:80]})" for p in procs))
    socks = sorted(glob.glob(str(WG_RUN_DIR / f"{prefix}*.sock")))
    if socks:
        found.append(f"sockets {socks}")
    links = root_links(prefix)
    if links:
        found.append(f"links in the root namespace {links}")
    dirs = sorted(glob.glob(os.path.join(tempfile.gettempdir(), f"skymesh-lab-{prefix}-*")))
    if dirs:
        found.append(f"temp dirs {dirs}")
    return found


def cleanup_prefix(prefix: str, procs: Iterable[subprocess.Popen[Any]] = ()) -> list[str]:
    """Remove everything of lab ``prefix``; return :func:`leftovers` afterwards.

    ``procs`` are our own children among its processes: they are reaped so no zombie stays.
    """
    nss = [ns for ns in list_netns() if ns.startswith(prefix + "-")]
    # A few rounds: a process may start one while it is being stopped (an agent whose wireguard-go died
    # first starts a new one; wireguard-go forks into the background), so look again until none is left.
    for _ in range(3):
        pids = {p for ns in nss for p in netns_pids(ns)} | set(_prefix_processes(prefix))
        if not pids:
            break
        terminate(pids, procs)
    for ns in nss:
        run(["ip", "netns", "del", ns], check=False)
    for link in root_links(prefix):  # none normally: nothing of a lab lives in the root ns
        ip("link", "del", link, check=False)
    for sock in glob.glob(str(WG_RUN_DIR / f"{prefix}*.sock")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock)
    for d in glob.glob(os.path.join(tempfile.gettempdir(), f"skymesh-lab-{prefix}-*")):
        shutil.rmtree(d, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        (MARKER_DIR / f"{prefix}.json").unlink()
    return leftovers(prefix)


def _owneralive(prefix: str) -> bool:
    try:
        info = json.loads((MARKER_DIR / f"{prefix}.json").read_text())
    except (FileNotFoundError, ValueError):
        return False
    st = proc_stat(int(info.get("pid", 0)))
    return st is not None and st[0] not in ("Z", "X") and st[2] == info.get("starttime")


def cleanup_stale(prefix: str | None = None) -> dict[str, list[str]]:
    """Remove leftovers of crashed labs; returns ``{prefix: what is still left}``.

    With ``prefix``: that lab, whoever owns it. Without: every lab (namespace
    ``sml????-*``, marker, WireGuard socket or temp dir) whose owning process is gone;
    labs of live processes (parallel runs) are left alone.
    """
    if prefix is not None:
        if not PREFIX_RE.match(prefix):
            raise LabError(f"{prefix!r} is not a lab prefix (sml + 4 of [a-z0-9])")
        return {prefix: cleanup_prefix(prefix)}
    candidates = {m.group(1) for ns in list_netns() if (m := LAB_NETNS_RE.match(ns))}
    candidates |= {p.stem for p in MARKER_DIR.glob("sml*.json")} if MARKER_DIR.exists() else set()
    candidates |= {m.group(1) for s in glob.glob(str(WG_RUN_DIR / "sml*.sock"))
                   if (m := re.match(r"(sml[a-z0-9]{4})", Path(s).name))}
    candidates |= {m.group(1) for d in glob.glob(os.path.join(tempfile.gettempdir(), "skymesh-lab-sml*"))
                   if (m := re.match(r"skymesh-lab-(sml[a-z0-9]{4})-", Path(d).name))}
    return {p: cleanup_prefix(p) for p in sorted(candidates)
            if PREFIX_RE.match(p) and not _owneralive(p)}
