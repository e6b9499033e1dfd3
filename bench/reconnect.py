"""Reconnect: after an outage, the time until every agent has applied what changed meanwhile.

Runs the local stack *in this process* (:class:`skymesh.local.stack.LocalStack`:
DynamoDB Local, Mosquitto with mutual TLS, the HTTP API as child processes) so that
the bench can stop and start one child while the rest stays up (``skymesh local up``
ends the whole stack when a child dies). N agents run as in ``bench/propagation.py``:
the agent's own :class:`agent.runner.Agent`, each with its own MQTT5 mTLS connection,
an in-memory WireGuard backend, spread over W worker processes; every resync
during the measured run is a real ``GET /config``.

Scenarios (``--scenario``):

``broker``  Mosquitto is stopped (every agent's connection drops), one host is
            changed through the API (the change is stored; its broadcast cannot go
            out), after ``--outage`` seconds Mosquitto starts again. Per agent: the
            time from the broker's start until it applied the change (it learns it
            from the resync that follows every connect).
``api``     The API dies while the broker is also down; the broker comes back first,
            so every agent reconnects and its resync fails (connection refused) and
            backs off; after ``--outage`` seconds the API starts again. Per agent: the
            time from the API's start until it applied the change.

The JSON line carries p50/p99/max, the load average before and after (the machine
is shared), CPU seconds the broker and the API used in the measured window, and
threads per worker process.

    python bench/reconnect.py [--agents 100] [--workers 4] [--outage 30] [--scenario broker]

``--reconnect-max-ms`` and ``--resync-max`` run the same code with other backoff caps
(the settings before issue 7: ``--reconnect-max-ms 30000 --resync-max 60``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import call, ms, network_seq, percentile, register_fleet, summary  # noqa: E402
from bench.propagation import spawn_agents  # noqa: E402


@contextlib.contextmanager
def stack_in_process(home: Path) -> Iterator[tuple[Any, dict]]:
    """The local stack on free loopback ports, its children started from here; yields (stack, info)."""
    from skymesh.local.proc import free_port
    from skymesh.local.stack import LocalStack, StackConfig

    cfg = StackConfig(home=home, api_port=free_port(), mqtt_port=free_port(), dynamodb_port=free_port())
    stack = LocalStack(cfg, out=sys.stderr)
    try:
        yield stack, stack.start()
    finally:
        stack.stop()


def _child(stack: Any, name: str) -> Any:
    return next(c for n, c in stack.children if n == name)


def _cpu_seconds(pid: int | None) -> float:
    """utime + stime of a process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _threads(pid: int | None) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _wait_http(url: str, timeout: float) -> None:
    import urllib.error
    import urllib.request

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            urllib.request.urlopen(url, timeout=1)  # noqa: S310 - loopback
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.02)  # not listening yet
    raise SystemExit(f"the API at {url} did not come back within {timeout:.0f}s")


def main() -> None:  # noqa: PLR0915 - a linear script
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--workers", type=int, default=4, help="processes the agents are spread over")
    ap.add_argument("--outage", type=float, default=30.0,
                    help="seconds the broker (or API) is down; enough for backoffs to reach their cap")
    ap.add_argument("--settle", type=float, default=35.0,
                    help="seconds connected before the outage (the CRT resets its backoff after 30 s)")
    ap.add_argument("--scenario", choices=("broker", "api"), default="broker")
    ap.add_argument("--timeout", type=float, default=180.0, help="give up on agents not converged by then")
    ap.add_argument("--concurrency", type=int, default=16, help="parallel registrations while setting up")
    ap.add_argument("--reconnect-max-ms", type=int, help="override MqttLink's cap (default: the agent's)")
    ap.add_argument("--resync-max", type=float, help="override Timings.resync_max (default: the agent's)")
    ap.add_argument("--keep-logs", type=Path, help="copy the stack's logs (API, broker…) here at the end")
    args = ap.parse_args()

    from agent.mqtt import RECONNECT_MAX_MS, RECONNECT_MIN_MS
    from agent.runner import Timings

    n = args.agents
    with tempfile.TemporaryDirectory() as tmp, stack_in_process(Path(tmp) / "home") as (stack, info):
        api, admin = info["api_url"], info["admin_key"]
        net, target, hosts, shared, ca = register_fleet(api, admin, n, args.concurrency, Path(tmp))
        w = max(1, min(args.workers, n))
        link_options = {} if args.reconnect_max_ms is None else {"max_reconnect_ms": args.reconnect_max_ms}
        timing_options = {} if args.resync_max is None else {"resync_max": args.resync_max}
        pipes, procs = spawn_agents(hosts, shared.snapshots, ca, net["id"], Path(tmp), w,
                                    link_options, timing_options)
        threads = [_threads(p.pid) for p in procs]
        base = network_seq(api, admin, net["id"])
        broker, api_proc = stack.broker, _child(stack, "api")
        time.sleep(args.settle)  # as in a fleet that has been up for a while, not just started
        load_before = os.getloadavg()

        t_down = time.perf_counter()
        broker.stop()
        code, out = call(api, "PATCH", f"/v1/hosts/{target['host_id']}", admin,
                         {"endpoints": ["198.18.100.1:51820"]})
        patch_status = code
        if network_seq(api, admin, net["id"]) <= base:
            raise SystemExit(f"the change was not stored while the broker was down: {code} {out}")
        if args.scenario == "api":
            api_proc.stop()
            broker.start()  # every agent reconnects; its resync finds no API
        time.sleep(max(0.0, args.outage - (time.perf_counter() - t_down)))
        cpu0 = {"broker": _cpu_seconds(broker.process.pid if broker.process else None),
                "api": _cpu_seconds(api_proc.pid)}
        t_back = time.perf_counter()
        if args.scenario == "broker":
            broker.start()  # returns once a TLS client can connect
            cpu0["broker"] = 0.0  # a new process
        else:
            api_proc.start()
            _wait_http(api + "/", 60)
            cpu0["api"] = 0.0
        ready_after = time.perf_counter() - t_back
        for pc in pipes:
            pc.send(("wait", base, t_back, args.timeout))
        lat: list[float] = []
        reconnected: list[float] = []  # broker scenario: from its start to each agent's first CONNACK
        connacks_after = 0  # more than one per agent: a connection dropped again
        missing = 0
        for pc in pipes:
            _, rows, _sizes, connacks = pc.recv()
            missing += sum(a is None for a, _ in rows)
            lat += [a - t_back for a, _ in rows if a is not None]
            after = [[c - t_back for c in agent if c > t_back] for agent in connacks]
            reconnected += [min(a) for a in after if a]
            connacks_after += sum(len(a) for a in after)
        cpu = {"broker": _cpu_seconds(broker.process.pid if broker.process else None) - cpu0["broker"],
               "api": _cpu_seconds(api_proc.pid) - cpu0["api"]}
        window = max(lat) if lat else args.timeout
        resyncs = 0
        for pc in pipes:
            pc.send(("stop", 1))
            resyncs += pc.recv()[2]
        for p in procs:
            p.join(15)
        if args.keep_logs:
            shutil.copytree(Path(tmp) / "home" / "logs", args.keep_logs, dirs_exist_ok=True)
    if not lat:
        raise SystemExit("no agent converged")
    defaults = Timings(**timing_options)
    cap = link_options.get("max_reconnect_ms", f"{RECONNECT_MAX_MS // 2}-{RECONNECT_MAX_MS}")
    summary("reconnect", scenario=args.scenario, agents=n, workers=w, outage_s=args.outage,
            converged=len(lat), not_converged=missing, reconnected=len(reconnected), connacks=connacks_after,
            connack_p50_ms=ms(percentile(reconnected, 50)) if reconnected else None,
            connack_p99_ms=ms(percentile(reconnected, 99)) if reconnected else None,
            connack_max_ms=ms(max(reconnected)) if reconnected else None,
            p50_ms=ms(percentile(lat, 50)), p99_ms=ms(percentile(lat, 99)), max_ms=ms(max(lat)),
            back_ready_ms=ms(ready_after), patch_status=patch_status,
            resync_calls=resyncs, resyncs_per_agent=round(resyncs / n, 2),
            broker_cpu_s=round(cpu["broker"], 2), api_cpu_s=round(cpu["api"], 2),
            window_s=round(window, 2), threads_per_worker=threads,
            reconnect_ms=[RECONNECT_MIN_MS, cap],
            resync_s=[defaults.resync_min, defaults.resync_max],
            load_before=[round(x, 2) for x in load_before],
            load_after=[round(x, 2) for x in os.getloadavg()])


if __name__ == "__main__":
    main()
