"""What the lab's things are called and where they live: every name a lab makes starts with its
prefix (``sml`` + 4 characters), so parallel labs never clash and leftovers can always be found."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

__all__ = ["IFNAMSIZ", "LAB_NETNS_RE", "MARKER_DIR", "PREFIX_RE", "UNDERLAY", "WG_RUN_DIR"]

UNDERLAY = ipaddress.IPv4Network("198.18.0.0/15")
"""The only range lab underlay addresses come from (RFC 2544 benchmarking range)."""

PREFIX_RE = re.compile(r"^sml[a-z0-9]{4}$")
LAB_NETNS_RE = re.compile(r"^(sml[a-z0-9]{4})-")
IFNAMSIZ = 15
WG_RUN_DIR = Path("/var/run/wireguard")
MARKER_DIR = Path("/run/skymesh-lab")
