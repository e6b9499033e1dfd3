"""``skymesh-agent status``: the device as ``wg show`` reads, with names and networks."""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from chalicelib.domain.models import AUTO, Member

from .converge import Tracker
from .state import AgentState
from .wg.base import DevicePeer

__all__ = ["collect", "render"]


def collect(state: AgentState, tracker: Tracker, stats: dict[str, DevicePeer] | None,
            runtime: dict[str, Any], backend_name: str, alive: bool | None = None) -> dict[str, Any]:
    """Everything ``status`` shows, as JSON-ready data. ``stats`` is None when the device is down.

    ``alive`` says whether an agent holds the state directory now (None: unknown). An agent
    that was killed could not write that it stopped: its runtime file still says running,
    and ``alive`` corrects it (``agent.crashed``).
    """
    said_running = bool(runtime.get("running"))
    running = said_running if alive is None else said_running and alive
    subs = runtime.get("subscriptions") or {} if running else {}
    probes: dict[str, str] = runtime.get("probes") or {} if running else {}
    direct: dict[str, bool] = runtime.get("direct") or {} if running else {}
    # The routes shown are the device's: a range several gateways serve goes where the agent's
    # probes moved it (the gateways they found down are skipped, as the running agent does).
    tracker.set_down(h for h, verdict in probes.items() if verdict == "down")
    out: dict[str, Any] = {
        "host_id": state.host_id, "name": state.name, "interface": state.interface,
        "backend": backend_name, "server": state.server, "listen_port": state.listen_port,
        "device_up": stats is not None,
        "agent": {"running": running, "connected": running and bool(runtime.get("connected")),
                  "crashed": said_running and not running,
                  "host_deleted": runtime.get("stopped") == "host_deleted",
                  "last_sync": runtime.get("last_sync"), "error": runtime.get("error"),
                  "subscriptions": [{"topic": t, "state": v.get("state"), "error": v.get("error") or None}
                                    for t, v in sorted(subs.items())],
                  "subscriptions_retry_at": runtime.get("subscriptions_retry_at") if running else None},
        "networks": [],
    }
    stats = stats or {}
    for snap, view in zip(tracker.snapshots, tracker.views(), strict=True):
        members: dict[str, Member] = {m.host_id: m for m in snap.members}
        peers = []
        for p in view.peers:
            s = stats.get(p.public_key)
            nets = [ipaddress.ip_interface(a) for a in p.allowed_ips]
            peers.append({
                "host_id": p.host_id, "name": p.name, "public_key": p.public_key,
                "client": p.host_id not in members,  # a remote-access client of this gateway
                "addresses": [str(n.ip) for n in nets if n.network.prefixlen == n.max_prefixlen],
                # what else is routed to it: a gateway's egress ranges and clients, the internet
                "routes": [str(n.network) for n in nets if n.network.prefixlen != n.max_prefixlen],
                "endpoint": (s.endpoint if s and s.endpoint else p.endpoint),
                "latest_handshake": s.latest_handshake if s else None,
                "rx_bytes": s.rx_bytes if s else 0, "tx_bytes": s.tx_bytes if s else 0,
                "probe": probes.get(p.host_id),  # up, down, unknown; None: not probed
            })
        me = members[state.host_id]
        records = tracker.records(snap.network.id)
        uses = records.internet_gateway(me.host_id)  # with ``auto``: the one it sends to now
        relay = records.relay_of(me.host_id)
        relayed = records.relayed(me.host_id)
        out["networks"].append({
            "id": snap.network.id, "name": snap.network.name, "seq": snap.seq,
            "addresses": [me.ipv4, me.ipv6], "interface_addresses": list(view.interface.addresses),
            "gateway": ({"forwards": list(view.forwards), "masquerades": list(view.nat)}
                        if (view.forwards and me.role.gateway is not None) or view.nat else None),
            # issue 10: whom this host reaches everything through, and whom it carries
            "relayed_by": None if relay is None else {"id": relay, "name": members[relay].name},
            "relays": [{"id": h, "name": members[h].name} for h in relayed],
            # pairs relayed automatically (autorelay): the peer, its via, and the agent's verdict
            # on the direct path over the underlay (None: the agent is not running)
            "relayed_pairs": [{"id": h, "name": members[h].name, "via": via, "via_name": members[via].name,
                               "direct": direct.get(h) if running else None}
                              for h, via in sorted(records.paired(me.host_id).items())],
            "full_tunnel": ({"via": uses, "name": members[uses].name if uses in members else uses,
                             "auto": me.role.internet_gateway == AUTO}
                            if view.full_tunnel and uses else None),
            "peers": peers,
        })
    return out


def _ago(ts: float | None, now: float) -> str:
    if not ts:
        return "never"
    secs = max(0, int(now - ts))
    parts: list[str] = []
    for unit, n in (("hour", 3600), ("minute", 60), ("second", 1)):
        if secs >= n or (unit == "second" and not parts):
            q, secs = divmod(secs, n)
            parts.append(f"{q} {unit}{'' if q == 1 else 's'}")
    return ", ".join(parts) + " ago"


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.2f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _subscriptions(subs: list[dict[str, Any]], retry_at: float | None, now: float) -> str:
    ok = sum(1 for s in subs if s["state"] == "subscribed")
    line = f"subscriptions: {ok} of {len(subs)} subscribed"
    bad = [f"{s['topic']} {s['state']}" + (f" ({s['error']})" if s.get("error") else "")
           for s in subs if s["state"] != "subscribed"]
    if bad:
        line += "; " + ", ".join(bad)
        if retry_at:
            line += f"; next try in {max(0, round(retry_at - now))}s"
    return line


def render(st: dict[str, Any], now: float | None = None) -> str:
    now = time.time() if now is None else now
    a = st["agent"]
    agent = ("stopped: this host was deleted from the control plane" if a.get("host_deleted") else
             "not running (it stopped without saying so: killed or crashed)" if a.get("crashed") else
             "not running" if not a["running"] else
             "connected" if a["connected"] else "running, control plane unreachable")
    lines = [
        f"host: {st['name']} ({st['host_id']})",
        f"  interface: {st['interface']} ({st['backend']}, {'up' if st['device_up'] else 'DOWN'}), "
        f"listening port: {st['listen_port']}",
        f"  agent: {agent}; last full sync: {_ago(a['last_sync'], now)}",
    ]
    if a["connected"] and a.get("subscriptions"):
        lines.append("  " + _subscriptions(a["subscriptions"], a.get("subscriptions_retry_at"), now))
    if a.get("error"):
        lines.append(f"  last error: {a['error']}")
    for n in st["networks"]:
        lines += ["", f"network: {n['name']} ({n['id']}) seq {n['seq']}",
                  f"  addresses: {', '.join(n['interface_addresses'])}"]
        if n.get("gateway"):
            g = n["gateway"]
            lines.append(f"  gateway: forwards {', '.join(g['forwards'])}"
                         + (f"; masquerades to {', '.join(g['masquerades'])}" if g["masquerades"] else ""))
        if n.get("relayed_by"):
            r = n["relayed_by"]
            lines.append(f"  relayed by {r['name']} ({r['id']}): every host is reached through it")
        if n.get("relays"):
            rs = n["relays"]
            lines.append(f"  relays {len(rs)} host{'' if len(rs) == 1 else 's'}: "
                         + ", ".join(f"{r['name']} ({r['id']})" for r in rs))
        for p in n.get("relayed_pairs") or ():
            verdict = ("unknown (agent not running)" if p["direct"] is None else
                       "answers: the pair may go direct" if p["direct"] else "not answering (yet)")
            lines.append(f"  {p['name']} ({p['id']}) relayed through {p['via_name']} ({p['via']}); "
                         f"direct path: {verdict}")
        if n.get("full_tunnel"):
            lines.append(f"  full tunnel: all other traffic through {n['full_tunnel']['name']} "
                         f"({n['full_tunnel']['via']})" + (", chosen automatically (auto)"
                                                            if n['full_tunnel'].get("auto") else ""))
        for p in n["peers"]:
            lines += [
                "",
                f"  peer: {p['name']} ({p['host_id']})"
                + (", remote-access client" if p.get("client") else ""),
                f"    public key: {p['public_key']}",
                f"    addresses: {', '.join(p['addresses'])}",
                *([f"    routes: {', '.join(p['routes'])}"] if p.get("routes") else []),
                f"    endpoint: {p['endpoint'] or '(none)'}",
                f"    latest handshake: {_ago(p['latest_handshake'], now)}",
                *([f"    probe: {p['probe']}"] if p.get("probe") else []),
                f"    transfer: {_bytes(p['rx_bytes'])} received, {_bytes(p['tx_bytes'])} sent",
            ]
    return "\n".join(lines)
