"""``make demo``: a visible run of skymesh in a throw-away lab of network namespaces.

The control plane (``skymesh local up``) starts in one namespace; three or four hosts,
each in its own namespace, join through the real agent (wireguard-go over UAPI); then
a status table (per host: overlay addresses, peers, latest handshake) and a ping
matrix over the overlay (IPv4 and IPv6). Everything is removed at the end, also on
Ctrl-C or SIGTERM. Needs root. Exit status: 0 when every ping worked, 1 otherwise,
2 when the machine cannot run the lab.

    .venv/bin/python -m skymesh.lab.demo [--hosts N]
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import CliError
from .control_plane import ControlPlane
from .errors import LabError
from .mesh import LabAgent, agent_available, diagnose, ping_matrix, plain
from .netns import Lab
from .requirements import missing_requirements
from .wait import wait_until

CONVERGE = 45.0


class Out:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.color = sys.stdout.isatty()

    def step(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:5.1f}s] {text}", flush=True)

    def mark(self, ok: bool) -> str:
        sym = "ok" if ok else "FAIL"
        if self.color:
            return f"\033[32m{sym}\033[0m" if ok else f"\033[31m{sym}\033[0m"
        return sym


def _ago(ts: Any) -> str:
    if not ts:
        return "never"
    return f"{max(0, int(time.time() - float(ts)))}s ago"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def status_table(agents: list[LabAgent], statuses: dict[str, dict[str, Any]]) -> str:
    rows = []
    for a in agents:
        st = statuses[a.name]
        nets = st.get("networks", [])
        addrs = ", ".join(plain(x) for n in nets for x in n.get("addresses", []))
        first = True
        peers = [p for n in nets for p in n.get("peers", [])] or [None]
        for p in peers:
            rows.append([
                a.name if first else "", a.interface if first else "", addrs if first else "",
                p["name"] if p else "(no peers)",
                p.get("endpoint") or "-" if p else "",
                _ago(p.get("latest_handshake")) if p else "",
                f"{p.get('rx_bytes', 0)}/{p.get('tx_bytes', 0)}" if p else "",
            ])
            first = False
    return _table(rows, ["host", "interface", "overlay addresses", "peer", "peer endpoint",
                         "handshake", "rx/tx bytes"])


def matrix_table(agents: list[LabAgent], results: dict[tuple[str, str, str], bool], out: Out) -> str:
    def cell(src: str, dst: str, v6: bool) -> str:
        got = [ok for (s, d, addr), ok in results.items() if s == src and d == dst and (":" in addr) == v6]
        return "-" if not got else ("ok" if all(got) else "FAIL")

    names = [a.name for a in agents]
    rows = [[src] + ["·" if src == dst else f"{cell(src, dst, False)}/{cell(src, dst, True)}"
                     for dst in names] for src in names]
    text = _table(rows, ["from \\ to (v4/v6)", *names])
    if out.color:
        text = text.replace("FAIL", "\033[31mFAIL\033[0m").replace("ok", "\033[32mok\033[0m")
    return text


def run(hosts: int, out: Out) -> int:
    with Lab() as lab:
        out.step(f"lab {lab.prefix}: hub namespace {lab.hub} with a bridge; underlay {lab.subnet}, "
                 "no default route")
        cp = ControlPlane(lab.add_node("cp"))
        out.step(f"starting the control plane in {cp.node.netns} ({cp.api_url}): "
                 "DynamoDB Local, Mosquitto, API, scheduler, rule bridge")
        cp.start()
        net = cp.admin.create_network("demo", "100.64.0.0/24")
        key = cp.admin.create_enrollment_key([net["id"]], uses=hosts)
        out.step(f"network {net['name']} ({net['id']}): {net['ipv4_cidr']}, {net['ipv6_cidr']}; "
                 f"enrollment key for {hosts} hosts")

        agents = [LabAgent(lab.add_node(f"h{i}")) for i in range(1, hosts + 1)]
        with ThreadPoolExecutor(max_workers=hosts) as pool:
            list(pool.map(lambda a: a.join(cp.api_url, key["token"]), agents))
        for a in agents:
            out.step(f"{a.name} joined as {a.host_id} ({a.node.netns}, underlay {a.node.ip}, "
                     f"interface {a.interface})")
            a.start()
        out.step("agents running; waiting for every host to list the others as peers")
        want = {a.name: {b.host_id for b in agents if b is not a} for a in agents}
        wait_until(lambda: all(a.peer_ids() == want[a.name] for a in agents), CONVERGE,
                   "every agent to list every other host as a peer", interval=0.5,
                   details=lambda: diagnose(agents))
        statuses = {a.name: a.status() for a in agents}
        addresses = {a.name: a.addresses(statuses[a.name]) for a in agents}

        out.step("converged; pinging every host from every host over the overlay (IPv4 and IPv6)")
        # The first packet of a pair starts its WireGuard handshake: allow a few tries.
        results = ping_matrix(agents, addresses, wait=2, count=3)
        statuses = {a.name: a.status() for a in agents}
        print()
        print(status_table(agents, statuses))
        print()
        print(matrix_table(agents, results, out))
        print()
        ok = all(results.values())
        out.step(f"{sum(results.values())}/{len(results)} pings answered: {out.mark(ok)}; cleaning up")
        if not ok:
            print(diagnose(agents, log_lines=20), file=sys.stderr)
        prefix = lab.prefix
    out.step(f"lab {prefix} removed (namespaces, processes, WireGuard sockets, temp files)")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m skymesh.lab.demo", description=__doc__.splitlines()[0])
    p.add_argument("--hosts", type=int, default=4, choices=range(2, 10), metavar="N",
                   help="number of hosts (2-9, default 4)")
    args = p.parse_args(argv)
    missing = missing_requirements()
    if missing:
        print("error: the demo needs " + ", ".join(missing), file=sys.stderr)
        return 2
    reason = agent_available()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2

    def on_term(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)  # cleaned up like Ctrl-C
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    out = Out()
    try:
        return run(args.hosts, out)
    except KeyboardInterrupt:
        out.step("interrupted; the lab was removed")
        return 130
    except (LabError, CliError) as e:  # CliError: the API refused, or did not answer
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
