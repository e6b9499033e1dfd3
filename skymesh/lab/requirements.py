"""What a lab needs of this machine (root, tools, /dev/net/tun), for skip reasons and ``make demo``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["missing_requirements"]


def missing_requirements(*, control_plane: bool = True, wireguard: bool = True) -> list[str]:
    """What this machine lacks for a lab (empty list: all there). For test skip reasons."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces)")
    tools = ["ip", "ping"]
    if wireguard:
        tools += ["wireguard-go", "wg"]
    if control_plane:
        tools += ["java"]
    missing += [f"`{t}` on PATH" for t in tools if shutil.which(t) is None]
    if control_plane and not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        missing.append("`mosquitto`")
    if wireguard and not Path("/dev/net/tun").exists():
        missing.append("/dev/net/tun")
    return missing
