"""Propagation: one host change through the API → time until N agents applied it.

Starts `skymesh local up` (real DynamoDB Local, Mosquitto with mutual TLS, the
HTTP API) and registers N+1 hosts. N simulated agents then run in this process,
each the agent's own :class:`agent.runner.Agent` (tracker, topology, per-peer diff,
apply) with its own MQTT5 mTLS connection (awsiotsdk) to the broker and an
in-memory WireGuard backend. The extra host is changed through the API
(``PATCH /v1/hosts/{id}`` with a new endpoint) R times; for each change we take,
per agent, the time from sending the request until that agent applied it.

What is not real: the WireGuard device (in memory), and the disk (the agents'
cache writes are skipped; each real host writes its own small cache file), and
the agents' start-up resync is served from one /config fetch made by the bench
instead of N (that is a cold-start herd, not propagation).

    python bench/propagation.py [--agents 100] [--changes 5]
"""

from __future__ import annotations

import argparse
import queue
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import call, host_body, local_stack, percentile, stats_ms, summary  # noqa: E402


def main() -> None:  # noqa: PLR0915 - a linear script
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--changes", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=16, help="parallel registrations while setting up")
    args = ap.parse_args()

    from agent import keys
    from agent.api import ApiClient, FullConfig
    from agent.mqtt import MqttLink, Received
    from agent.runner import Agent, Timings
    from agent.state import AgentState, StateDir
    from agent.wg.memory import MemoryBackend
    from chalicelib.domain import protocol

    n = args.agents
    with local_stack() as info, tempfile.TemporaryDirectory() as tmp:
        api, admin = info["api_url"], info["admin_key"]
        code, net = call(api, "POST", "/v1/networks", admin, {"name": "bench", "ipv4_cidr": "100.64.0.0/16"})
        assert code == 201, net
        code, key = call(api, "POST", "/v1/enrollment-keys", admin, {"networks": [net["id"]], "uses": n + 1})
        assert code == 201, key

        def register(i: int) -> tuple[dict, str, str]:
            body, tls = host_body(f"a{i}", f"198.18.{i // 250}.{i % 250 + 1}:51820")
            code, out = call(api, "POST", "/v1/hosts", key["token"], body)
            assert code == 201, out
            return out, tls, keys.new_wireguard_key()

        t = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            hosts = list(pool.map(register, range(n + 1)))
        print(f"registered {n + 1} hosts in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        target, hosts = hosts[-1][0]["host"], hosts[:-1]
        shared = ApiClient(api, hosts[0][0]["host_token"]).config(hosts[0][0]["host"]["id"])

        class SharedConfig(ApiClient):
            """Every agent's /config, served from the one fetched above (members are network-wide)."""

            def config(self, host_id: str) -> FullConfig:
                return FullConfig(host_id=host_id, snapshots=self.snapshots)

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

            def load_cache(self) -> list[protocol.Snapshot]:
                return []

            def save_cache(self, snapshots: list[protocol.Snapshot]) -> None:
                pass

            def save_runtime(self, info: dict) -> None:
                pass

        applied_at: list[dict[int, float]] = [{} for _ in range(n)]
        seen_bytes: list[tuple[int, int]] = []  # (seq, bytes) of broadcasts agent 0 received
        agents: list[Agent] = []
        ca = Path(tmp) / "ca.pem"
        ca.write_text(hosts[0][0]["ca_pem"])
        net_topic = protocol.network_topic(net["id"])
        for i, (reg, tls, wg) in enumerate(hosts):
            h = reg["host"]
            d = Path(tmp) / h["id"]
            d.mkdir()
            (d / "tls.key").write_text(tls)
            (d / "tls.crt").write_text(reg["certificate_pem"])
            state = AgentState(server=api, host_id=h["id"], name=h["name"], host_token=reg["host_token"],
                               interface=f"sim{i}", backend="memory", listen_port=51820,
                               mqtt_endpoint=reg["mqtt"]["endpoint"], mqtt_port=reg["mqtt"]["port"],
                               client_id=reg["mqtt"]["client_id"], endpoints=tuple(h["endpoints"]))
            api_client = SharedConfig(api, reg["host_token"])
            api_client.snapshots = shared.snapshots

            def on_applied(tracker, i=i) -> None:  # noqa: ANN001
                seq = tracker.seq(net["id"])
                if seq is not None:
                    applied_at[i].setdefault(seq, time.perf_counter())

            def link_factory(events: queue.Queue, d=d, reg=reg, i=i) -> MqttLink:
                if i == 0:  # tee: count what one subscriber receives per change
                    class Tee(queue.Queue):
                        def put(self, item, block=True, timeout=None) -> None:  # noqa: ANN001
                            if isinstance(item, Received) and item.topic == net_topic:
                                seen_bytes.append((protocol.decode(item.payload).seq, len(item.payload)))
                            events.put(item)
                    out = Tee()
                else:
                    out = events
                return MqttLink(endpoint=reg["mqtt"]["endpoint"], port=reg["mqtt"]["port"],
                                client_id=reg["mqtt"]["client_id"], cert_path=d / "tls.crt",
                                key_path=d / "tls.key", ca_path=ca, events=out)

            agents.append(Agent(MemoryStateDir(d, state, wg), backend=MemoryBackend(f"sim{i}"),
                                netsetup=None, api=api_client, link_factory=link_factory,
                                timings=Timings(heartbeat=3600), on_applied=on_applied))

        threads = [threading.Thread(target=a.run, daemon=True) for a in agents]
        t = time.perf_counter()
        for th in threads:
            th.start()
        deadline = time.monotonic() + 120 + n * 0.1
        while not all(a.connected and a._subscribed for a in agents):
            if time.monotonic() > deadline:
                raise SystemExit(f"only {sum(a.connected for a in agents)}/{n} agents connected")
            time.sleep(0.1)
        print(f"{n} agents connected and subscribed in {time.perf_counter() - t:.1f}s", file=sys.stderr)

        samples: list[float] = []
        api_done: list[float] = []  # when the PATCH returned (the broadcast is out by then)
        per_change_p99: list[float] = []
        seqs_before = len(seen_bytes)
        for c in range(args.changes):
            base = max(a.tracker.seq(net["id"]) or 0 for a in agents)
            t0 = time.perf_counter()
            code, out = call(api, "PATCH", f"/v1/hosts/{target['id']}", admin,
                             {"endpoints": [f"198.18.100.{c + 1}:51820"]})
            assert code == 200, out
            api_done.append(time.perf_counter() - t0)
            deadline = time.monotonic() + 60
            while not all(any(s > base for s in applied_at[i]) for i in range(n)):
                if time.monotonic() > deadline:
                    missing = sum(not any(s > base for s in applied_at[i]) for i in range(n))
                    raise SystemExit(f"change {c}: {missing}/{n} agents did not apply it within 60s")
                time.sleep(0.01)
            lat = [min(ts for s, ts in applied_at[i].items() if s > base) - t0 for i in range(n)]
            samples += lat
            per_change_p99.append(percentile(lat, 99))
            time.sleep(0.5)  # let the broker go quiet so changes do not overlap
        msgs = seen_bytes[seqs_before:]
        resyncs = sum(len(a.backend.applies) > args.changes + 1 for a in agents)
        for a in agents:
            a.stop()
        for th in threads:
            th.join(10)
    summary("propagation", agents=n, changes=args.changes, samples=len(samples),
            messages_per_change=round(len(msgs) / args.changes, 2),
            bytes_per_change=round(sum(b for _, b in msgs) / args.changes),
            worst_change_p99_ms=round(max(per_change_p99) * 1000, 2),
            agents_with_extra_applies=resyncs, api_p50_ms=round(percentile(api_done, 50) * 1000, 2),
            **stats_ms(samples))


if __name__ == "__main__":
    main()
