"""The network plan with gateways and remote-access clients: time, memory, and the size of one change.

A network of N hosts (default 1,000) with G gateways (default 10: all with remote access, every
other one with two egress ranges, the first an internet gateway that a tenth of the hosts use
with full tunnel) and C clients (default 500, spread over the gateways; every fifth with a LAN,
every tenth disabled), and the same hosts without gateways or clients as the baseline. Pure
and in-process (``chalicelib.domain``): no store, no broker.

- ``full_plan``: ``network_plan`` read for every host (what all agents compute together);
  peak memory of holding that whole plan (tracemalloc).
- ``config``: one host's ``/config``-style device: the records, its view, ``merge_views``
  (for a plain host, and for a gateway, which also has its clients as peers).
- ``delta``: ``protocol.encode`` of the broadcast of one change (one client; one plain member;
  one gateway member), built by ``changes.delta`` from the records as the stream does, in the
  network with gateways and in the baseline: one change is one publish that carries only the
  changed record, whatever else the network holds.

    python bench/plan.py [--hosts 1000] [--gateways 10] [--clients 500] [--repeat 5]
"""

from __future__ import annotations

import argparse
import base64
import gc
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ms, stats_ms, summary  # noqa: E402
from chalicelib.domain import changes, plan, protocol  # noqa: E402
from chalicelib.domain.device import merge_views  # noqa: E402
from chalicelib.domain.ids import ClientId, HostId, NetworkId  # noqa: E402
from chalicelib.domain.models import Client, Gateway, Member, MemberRole, Network  # noqa: E402
from chalicelib.domain.plan import NetworkRecords  # noqa: E402

NET = Network(id=NetworkId("net_bench000001"), name="bench", ipv4_cidr="100.64.0.0/16",
              ipv6_cidr="fd00:b::/64", seq=1)


def key(i: int) -> str:
    return base64.b64encode(i.to_bytes(32, "big")).decode()


def host_id(i: int) -> HostId:
    return HostId(f"host_{i:012x}")


def build(hosts: int, gateways: int, clients: int) -> tuple[NetworkRecords, NetworkRecords]:
    """(the network with gateways and clients, the same hosts without either)."""
    plain = [Member(NET.id, host_id(i), f"h{i}", key(i + 1), f"100.64.{i // 250}.{i % 250 + 1}",
                    f"fd00:b::{i + 1:x}", 51820, endpoints=(f"198.18.{i // 250}.{i % 250 + 1}:51820",))
             for i in range(hosts)]
    members = []
    for i, m in enumerate(plain):
        role = MemberRole()
        if i < gateways:
            egress = (f"10.{i}.0.0/16", f"fd10:{i:x}::/48") if i % 2 else ()
            role = MemberRole(gateway=Gateway(remote_access=True, egress=egress, internet=i == 0))
        elif i % 10 == 0 and gateways:
            role = MemberRole(internet_gateway=host_id(0), full_tunnel=True)
        members.append(replace(m, role=role))
    cls = [Client(ClientId(f"cli_{j:012x}"), NET.id, f"c{j}", key(10**6 + j),
                  f"100.64.{200 + j // 250}.{j % 250 + 1}", f"fd00:b::1:{j + 1:x}",
                  host_id(j % gateways), enabled=j % 10 != 9,
                  extra_addresses=(f"192.168.{j // 5 % 256}.0/24",) if j % 5 == 0 and j < 1280 else ())
           for j in range(clients if gateways else 0)]
    return NetworkRecords.of(NET, members, cls), NetworkRecords.of(NET, plain)


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def full_plan(records: NetworkRecords) -> int:
    """Every host's view, read from one plan (fresh records: nothing cached from before)."""
    r = NetworkRecords(records.network, records.members, records.clients)
    p = plan.network_plan(r)
    return sum(len(p[h].peers) for h in p)


def peak_bytes(records: NetworkRecords) -> int:
    gc.collect()
    tracemalloc.start()
    r = NetworkRecords(records.network, records.members, records.clients)
    p = plan.network_plan(r)
    views = [p[h] for h in p]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del views
    return peak


def config(records: NetworkRecords, hid: HostId) -> int:
    r = NetworkRecords(records.network, records.members, records.clients)
    return len(merge_views([plan.network_plan(r)[hid]], 51820).peers)


def broadcast_bytes(records: NetworkRecords, *, host: HostId | None = None,
                    client: ClientId | None = None) -> int:
    """Bytes of the one delta the stream publishes for a change of ``host`` or ``client``."""
    stamp = changes.ChangeId(time.time_ns(), "0000abcd")
    batch = changes.new_changes([NET.id], stamp, host_ids=(host,) if host else (),
                                client_ids=(client,) if client else ())
    d = changes.delta(replace(NET, seq=NET.seq + 1), batch, records.members, records.clients)
    assert len(d.upsert) + len(d.clients) == 1 and not d.remove and not d.remove_clients
    return len(protocol.encode(d))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--gateways", type=int, default=10)
    ap.add_argument("--clients", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    with_gw, baseline = build(args.hosts, args.gateways, args.clients)
    plan.check(with_gw)
    served = sum(1 for c in with_gw.clients.values() if with_gw.served(c))
    plain_host, gateway_host = host_id(args.hosts - 1), host_id(1)
    some_client = sorted(with_gw.clients)[0]

    full_gw = timed(lambda: full_plan(with_gw), args.repeat)
    full_base = timed(lambda: full_plan(baseline), args.repeat)
    cfg_plain = timed(lambda: config(with_gw, plain_host), args.repeat * 20)
    cfg_gw = timed(lambda: config(with_gw, gateway_host), args.repeat * 20)
    cfg_base = timed(lambda: config(baseline, plain_host), args.repeat * 20)
    summary(
        "plan", hosts=args.hosts, gateways=args.gateways, clients=len(with_gw.clients), served_clients=served,
        full_tunnel_hosts=sum(1 for h in with_gw.members if with_gw.internet_gateway(h)),
        full_plan_ms=ms(statistics.median(full_gw)), full_plan_baseline_ms=ms(statistics.median(full_base)),
        full_plan_peak_mb=round(peak_bytes(with_gw) / 2**20, 1),
        full_plan_baseline_peak_mb=round(peak_bytes(baseline) / 2**20, 1),
        config_plain_host=stats_ms(cfg_plain), config_gateway=stats_ms(cfg_gw),
        config_baseline=stats_ms(cfg_base),
        gateway_peers=config(with_gw, gateway_host), plain_host_peers=config(with_gw, plain_host),
        delta_bytes_client=broadcast_bytes(with_gw, client=some_client),
        delta_bytes_member=broadcast_bytes(with_gw, host=plain_host),
        delta_bytes_member_baseline=broadcast_bytes(baseline, host=plain_host),
        delta_bytes_gateway_member=broadcast_bytes(with_gw, host=gateway_host),
        delta_bytes_gateway_member_baseline=broadcast_bytes(baseline, host=gateway_host),
        repeat=args.repeat,
    )


if __name__ == "__main__":
    main()
