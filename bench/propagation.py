"""Propagation: one host change through the API → time until N agents applied it.

Starts `skymesh local up` (real DynamoDB Local, Mosquitto with mutual TLS, the
HTTP API) and registers N+1 hosts. N simulated agents then run in W worker
processes, each agent the agent's own :class:`agent.runner.Agent` (tracker,
topology, per-peer diff, apply) with its own MQTT5 mTLS connection (awsiotsdk)
to the broker and an in-memory WireGuard backend. The extra host is changed
through the API (``PATCH /v1/hosts/{id}`` with a new endpoint) R times; for each
change we take, per agent, the time from sending the request until that agent
received the broadcast and until it applied it (``perf_counter`` is the same
monotonic clock in every process).

What is not real: the WireGuard device (in memory); the disk (cache writes are
skipped; each real host writes its own small file); the agents' start-up resync
is served from one /config fetch made by the bench instead of N (a cold-start
herd, not propagation) — a resync during the measured run is a real API call.
And all N agents share this machine's cores with the broker and the API, where
real agents each have their own.

    python bench/propagation.py [--agents 100] [--changes 5] [--workers 4]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import client, local_stack, network_seq, percentile, register_fleet, stats_ms, summary  # noqa: E402


def worker(conn: Any, specs: list[dict], shared_wire: list[dict], ca_path: str, net_id: str,
           tmp: str, count_bytes: bool, link_options: dict | None = None,
           timing_options: dict | None = None) -> None:
    """Run the agents of ``specs`` until told to stop; answer the parent's questions on ``conn``.

    ``link_options`` / ``timing_options`` override the defaults of :class:`MqttLink` and
    :class:`Timings` (to measure other backoff settings with the same code).
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from agent.api import ApiClient, FullConfig
    from agent.mqtt import Connected, MqttLink, Received
    from agent.runner import Agent, Timings
    from agent.state import AgentState, StateDir
    from agent.wg.memory import MemoryBackend
    from chalicelib.domain import protocol

    shared = tuple(protocol.decode(w) for w in shared_wire)
    live = threading.Event()  # set once every agent is up: from then on resyncs are real calls
    resyncs_live: list[str] = []
    net_topic = protocol.network_topic(net_id)

    class SharedConfig(ApiClient):
        """At start-up every agent's /config is the one the parent fetched (members are
        network-wide); after that, the real call."""

        def config(self, host_id: str, known: dict[str, int] | None = None) -> FullConfig:
            if live.is_set():
                resyncs_live.append(host_id)
                return super().config(host_id, known)
            return FullConfig(host_id=host_id, snapshots=shared)

        def update_endpoints(self, host_id: str, endpoints: list[str]) -> None:
            pass

    class MemoryStateDir(StateDir):
        def __init__(self, path: Path, state: AgentState, wg: str) -> None:
            super().__init__(path)
            self._state, self._wg = state, wg

        def load(self) -> AgentState:
            return self._state

        def wg_key(self) -> str:
            return self._wg

        def load_cache(self) -> list:
            return []

        def save_cache(self, snapshots: list) -> None:
            pass

        def save_runtime(self, info: dict) -> None:
            pass

    n = len(specs)
    applied_at: list[dict[int, float]] = [{} for _ in range(n)]
    received_at: list[dict[int, float]] = [{} for _ in range(n)]
    connected_at: list[list[float]] = [[] for _ in range(n)]  # every CONNACK, for bench/reconnect.py
    seen_bytes: list[tuple[int, int]] = []
    agents: list[Agent] = []
    for i, spec in enumerate(specs):
        d = Path(tmp) / spec["host_id"]
        d.mkdir()
        (d / "tls.key").write_text(spec["tls_key"])
        (d / "tls.crt").write_text(spec["certificate_pem"])
        state = AgentState(server=spec["api"], host_id=spec["host_id"], name=spec["name"],
                           host_token=spec["host_token"], interface=f"sim{i}", backend="memory",
                           listen_port=51820, mqtt_endpoint=spec["mqtt_endpoint"],
                           mqtt_port=spec["mqtt_port"], client_id=spec["host_id"])

        def on_applied(tracker: Any, i: int = i) -> None:
            seq = tracker.seq(net_id)
            if seq is not None:
                applied_at[i].setdefault(seq, time.perf_counter())

        def link_factory(events: queue.Queue, d: Path = d, spec: dict = spec, i: int = i) -> MqttLink:
            class Tee(queue.Queue):
                """Timestamps each broadcast as it arrives (on the MQTT client's thread)."""

                def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
                    if isinstance(item, Connected):
                        connected_at[i].append(time.perf_counter())
                    elif isinstance(item, Received) and item.topic == net_topic:
                        seq = protocol.decode(item.payload).seq
                        received_at[i].setdefault(seq, time.perf_counter())
                        if i == 0 and count_bytes:  # what one subscriber receives per change
                            seen_bytes.append((seq, len(item.payload)))
                    events.put(item)

            return MqttLink(endpoint=spec["mqtt_endpoint"], port=spec["mqtt_port"], client_id=spec["host_id"],
                            cert_path=d / "tls.crt", key_path=d / "tls.key", ca_path=Path(ca_path),
                            events=Tee(), **(link_options or {}))

        api = SharedConfig(spec["api"], spec["host_token"])
        agents.append(Agent(MemoryStateDir(d, state, spec["wg_key"]), backend=MemoryBackend(f"sim{i}"),
                            netsetup=None, api=api, link_factory=link_factory,
                            timings=Timings(**{"heartbeat": 3600, **(timing_options or {})}),
                            on_applied=on_applied))
    threads = [threading.Thread(target=a.run, daemon=True) for a in agents]
    for th in threads:
        th.start()
    deadline = time.monotonic() + 60 + n * 0.2
    while not all(a.listening and a.tracker.network_ids for a in agents):
        if time.monotonic() > deadline:
            conn.send(("error", f"only {sum(a.connected for a in agents)}/{n} agents connected"))
            return
        time.sleep(0.05)
    live.set()
    conn.send(("ready", n))
    while True:
        msg = conn.recv()
        if msg[0] == "wait":
            _, base, t0, timeout = msg
            end = time.monotonic() + timeout
            while not all(any(s > base for s in applied_at[i]) for i in range(n)):
                if time.monotonic() > end:
                    break
                time.sleep(0.005)
            lat = [(min((ts for s, ts in applied_at[i].items() if s > base), default=None),
                    min((ts for s, ts in received_at[i].items() if s > base), default=None))
                   for i in range(n)]
            conn.send(("done", lat, [b for s, b in seen_bytes if s > base],
                       connected_at))
        elif msg[0] == "stop":
            extra = sum(len(a.backend.applies) > msg[1] + 1 for a in agents)
            for a in agents:
                a.stop()
            for th in threads:
                th.join(10)
            conn.send(("stopped", extra, len(resyncs_live)))
            return


def spawn_agents(hosts: list[dict], snapshots: Any, ca: Path, net_id: str, tmp: Path, workers: int,
                 link_options: dict | None = None, timing_options: dict | None = None,
                 ) -> tuple[list[Any], list[Any]]:
    """Run ``hosts`` as agents spread over ``workers`` processes; return once all are subscribed.

    Returns the pipes to talk to the workers (see :func:`worker`) and the processes.
    """
    from chalicelib.domain import protocol

    ctx = mp.get_context("spawn")
    pipes, procs = [], []
    t = time.perf_counter()
    wire = [protocol.to_wire(s) for s in snapshots]
    for k in range(workers):
        parent, child = ctx.Pipe()
        wdir = tmp / f"w{k}"
        wdir.mkdir()
        p = ctx.Process(target=worker, daemon=True,
                        args=(child, hosts[k::workers], wire, str(ca), net_id, str(wdir), k == 0,
                              link_options, timing_options))
        p.start()
        pipes.append(parent)
        procs.append(p)
    for c in pipes:
        status = c.recv()
        if status[0] != "ready":
            raise SystemExit(status[1])
    print(f"{len(hosts)} agents in {workers} processes connected and subscribed in "
          f"{time.perf_counter() - t:.1f}s", file=sys.stderr)
    return pipes, procs


def main() -> None:  # noqa: PLR0915 - a linear script
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--changes", type=int, default=5)
    ap.add_argument("--workers", type=int, default=4, help="processes the agents are spread over")
    ap.add_argument("--concurrency", type=int, default=16, help="parallel registrations while setting up")
    args = ap.parse_args()


    n = args.agents
    with local_stack() as info, tempfile.TemporaryDirectory() as tmp:
        api, admin = info["api_url"], info["admin_key"]
        net, target, hosts, shared, ca = register_fleet(api, admin, n, args.concurrency, Path(tmp))

        w = max(1, min(args.workers, n))
        pipes, procs = spawn_agents(hosts, shared.snapshots, ca, net["id"], Path(tmp), w)

        samples: list[float] = []
        received: list[float] = []
        api_done: list[float] = []  # when the PATCH returned (the broadcast is out by then)
        per_change_p99: list[float] = []
        msg_sizes: list[int] = []
        base = shared.snapshots[0].seq
        admin_api = client(api, admin)
        for c in range(args.changes):
            t0 = time.perf_counter()
            admin_api.update_host(target["host_id"], {"endpoints": [f"198.18.100.{c + 1}:51820"]})
            api_done.append(time.perf_counter() - t0)
            for pc in pipes:
                pc.send(("wait", base, t0, 60.0))
            lat: list[float] = []
            for pc in pipes:
                _, rows, sizes, _ = pc.recv()
                msg_sizes += sizes
                missing = sum(a is None for a, _ in rows)
                if missing:
                    raise SystemExit(f"change {c}: {missing} agents did not apply it within 60s")
                lat += [a - t0 for a, _ in rows]
                received += [r - t0 for _, r in rows if r is not None]
            samples += lat
            per_change_p99.append(percentile(lat, 99))
            base = max(base + 1, network_seq(api, admin, net["id"]))
        extra = resyncs = 0
        for pc in pipes:
            pc.send(("stop", args.changes))
            _, e, r = pc.recv()
            extra, resyncs = extra + e, resyncs + r
        for p in procs:
            p.join(15)
    summary("propagation", agents=n, workers=w, changes=args.changes, samples=len(samples),
            messages_per_change=round(len(msg_sizes) / args.changes, 2),
            bytes_per_change=round(sum(msg_sizes) / args.changes),
            worst_change_p99_ms=round(max(per_change_p99) * 1000, 2),
            agents_with_extra_applies=extra, resyncs_during_run=resyncs,
            api_p50_ms=round(percentile(api_done, 50) * 1000, 2),
            received_p50_ms=round(percentile(received, 50) * 1000, 2),
            received_p99_ms=round(percentile(received, 99) * 1000, 2),
            **stats_ms(samples))


if __name__ == "__main__":
    main()
