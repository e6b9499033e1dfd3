"""Status-report bytes per host per hour with probes running (issue 10: probes).

One host in a network with 10 gateways it routes through (egress on each), all probed every
second. The agent is the agent's own :class:`agent.runner.Agent` (its status timer, heartbeat,
the at-once rule and its one-extra-report-a-second limit) with an in-memory WireGuard device and
a recording MQTT link; its prober is the real :class:`agent.probe.Probes` (schedule, matching,
hysteresis), fed simulated echo replies instead of sockets, on a simulated clock, so an hour
runs in seconds. RTTs: a base per gateway (5–80 ms) with ±10 % noise per probe.

- ``steady``: every gateway answers all hour.
- ``flapping``: each minute one gateway (in turn) stops answering for 20 s: one down and one up
  per minute, each reported at once.
- ``no_probes``: the same host without a prober (the reports before issue 10), for comparison.

Bytes are the MQTT payloads (``protocol.encode``); the PUBLISH header and topic add about
30 bytes per report.

    python bench/report_bytes.py
"""

from __future__ import annotations

import heapq
import random
import sys
import tempfile
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import summary  # noqa: E402

GATEWAYS = 10
HOUR = 3600.0
TICK = 0.01  # simulated seconds per step of the loop (echo RTTs are 5–80 ms)


class SimClock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_800_000_000.0 + self.now


class SimProber:
    """The prober's API over the real pure :class:`agent.probe.Probes`, replies simulated."""

    def __init__(self, clock: SimClock, rtts: Mapping[str, float], silent: Callable[[str, float], bool],
                 rng: random.Random) -> None:
        from agent.probe import Probes, ProbeSettings

        self.settings = ProbeSettings()
        self.probes = Probes(self.settings)
        self.clock, self.rtts, self.silent, self.rng = clock, rtts, silent, rng
        self.listeners: list[Callable[[Any, bool], None]] = []
        self._replies: list[tuple[float, int, str]] = []

    def add_listener(self, on_change: Callable[[Any, bool], None]) -> None:
        self.listeners.append(on_change)

    def set_targets(self, targets: Mapping[Any, Any]) -> None:
        if dict(targets) != self.probes.targets:
            self.probes.set_targets(targets, self.clock.now)

    def rows(self) -> tuple:
        from agent.probe import rows
        return rows(self.probes.states())

    def states(self) -> dict:
        return self.probes.states()

    def start(self) -> None: ...
    def stop(self) -> None: ...

    def run_until(self, now: float) -> None:
        """Send what is due, deliver the replies that arrived, count the timeouts."""
        by_address = {t.address: h for h, t in self.probes.targets.items()}
        for seq, host, address in self.probes.due(now):
            if not self.silent(host, now):
                rtt = self.rtts[host] * (1 + self.rng.uniform(-0.1, 0.1)) / 1000
                heapq.heappush(self._replies, (now + rtt, seq, address))
        changes = []
        while self._replies and self._replies[0][0] <= now:
            at, seq, address = heapq.heappop(self._replies)
            if (c := self.probes.reply(seq, address, at)) is not None and address in by_address:
                changes.append(c)
        changes += self.probes.expire(now)
        for host, up in changes:
            for listener in self.listeners:
                listener(host, up)


def run(mode: str, seed: int = 7) -> dict[str, Any]:
    import agent.runner as runner
    from agent import keys
    from agent.api import FullConfig
    from agent.mqtt import Connected
    from agent.state import AgentState, StateDir
    from agent.wg.memory import MemoryBackend
    from chalicelib.domain import protocol
    from chalicelib.domain.ids import HostId, NetworkId
    from chalicelib.domain.models import Gateway, Member, MemberRole, Network

    rng = random.Random(seed)
    clock = SimClock()
    runner.time = types.SimpleNamespace(monotonic=clock.monotonic, time=clock.time)  # type: ignore[attr-defined]

    def member(n: int, role: MemberRole | None = None) -> Member:
        return Member(NetworkId("net_bench"), HostId(f"host_{n:012d}"), f"h{n}",
                      keys.wireguard_public_key(keys.new_wireguard_key()), f"100.64.0.{n}", f"fd00:1::{n:x}",
                      51820, (f"198.18.0.{n}:51820",), role or MemberRole())

    me = member(1)
    gws = [member(n, MemberRole(gateway=Gateway(egress=(f"10.{n}.0.0/16",)))) for n in range(2, 2 + GATEWAYS)]
    snap = protocol.Snapshot(Network(NetworkId("net_bench"), "bench", "100.64.0.0/16", "fd00:1::/64", seq=1),
                             (me, *gws))
    rtts = {m.host_id: rng.uniform(5.0, 80.0) for m in gws}

    def silent(host: str, now: float) -> bool:
        if mode != "flapping":
            return False
        minute = int(now // 60)
        return host == gws[minute % GATEWAYS].host_id and now % 60 < 20

    class Api:
        def config(self, host_id: str, known: Any = None) -> FullConfig:
            return FullConfig(host_id=host_id, snapshots=(snap,))

        def update_endpoints(self, host_id: str, endpoints: list[str]) -> None: ...

    class Link:
        def __init__(self) -> None:
            self.published: list[tuple[float, bytes]] = []

        def start(self) -> None: ...
        def stop(self) -> None: ...
        def subscribe(self, topics: list[str], timeout: float = 0) -> list[str]:
            return []
        def unsubscribe(self, topics: list[str], timeout: float = 0) -> None: ...

        def publish(self, topic: str, payload: bytes) -> None:
            self.published.append((clock.now, payload))

    with tempfile.TemporaryDirectory() as tmp:
        sd = StateDir(Path(tmp) / "state")
        sd.create()
        sd.save(AgentState(server="http://198.18.0.250:8787", host_id=me.host_id, name="h1", host_token="t",
                           interface="sm0", backend="memory", listen_port=51820, mqtt_endpoint="198.18.0.250",
                           mqtt_port=8883, client_id=me.host_id, endpoints=("198.18.0.1:51820",)))
        sd.save_secrets(wg_key=keys.new_wireguard_key(), tls_key=keys.new_tls_key())
        backend, link = MemoryBackend("sm0"), Link()
        prober = None if mode == "no_probes" else SimProber(clock, rtts, silent, rng)
        agent = runner.Agent(sd, backend=backend, netsetup=None, api=Api(),  # type: ignore[arg-type]
                             link_factory=lambda _events: link, prober=prober)  # type: ignore[arg-type]
        agent.link = link
        agent.boot()
        agent.handle(Connected())
        steps = int(HOUR / TICK)
        for i in range(steps + 1):
            clock.now = i * TICK
            if i % int(60 / TICK) == 0:  # traffic keeps every gateway's handshake fresh
                for m in gws:
                    backend.record_traffic(m.public_key, int(clock.time()), 1000 * i, 1000 * i)
            if prober is not None:
                prober.run_until(clock.now)
            agent.step(timeout=0)
        sizes = [len(p) for _, p in link.published]
        last = protocol.decode_status(link.published[-1][1])
        return {"reports": len(sizes), "bytes": sum(sizes), "largest": max(sizes),
                "rows": len(last.latency), "peers": len(last.peers)}


def main() -> None:
    from agent.probe import ProbeSettings

    out = {mode: run(mode) for mode in ("steady", "flapping", "no_probes")}
    summary("report_bytes", gateways=GATEWAYS, probe_interval_s=ProbeSettings.fast, heartbeat_s=300,
            steady_bytes_per_hour=out["steady"]["bytes"], steady_reports_per_hour=out["steady"]["reports"],
            flapping_bytes_per_hour=out["flapping"]["bytes"],
            flapping_reports_per_hour=out["flapping"]["reports"],
            no_probes_bytes_per_hour=out["no_probes"]["bytes"],
            no_probes_reports_per_hour=out["no_probes"]["reports"],
            largest_report_bytes=out["flapping"]["largest"], latency_rows=out["steady"]["rows"],
            peers=out["steady"]["peers"])


if __name__ == "__main__":
    main()
