"""The agent with its prober (issue 10: probes): what it probes, and when the latency section of its
status report goes out (at once on up/down or a ranking change beyond hysteresis, at most one
extra report a second; otherwise at the heartbeat). The prober is scripted here; its socket side
runs for real in tests/e2e/test_latency.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from agent.mqtt import Connected
from agent.probe import FAST, SLOW, ProbeSettings, Target, TargetState, rows
from agent.runner import ProbeChanged
from chalicelib.domain import protocol
from chalicelib.domain.ids import HostId
from chalicelib.domain.models import Gateway, LatencyRow, MemberRole

from .test_agent_runner import ScriptedApi, make_agent, member, snapshot


class ScriptedProber:
    """The :class:`agent.probe.Prober` API, with states set by the test instead of by sockets."""

    def __init__(self) -> None:
        self.settings = ProbeSettings()
        self.targets: dict[HostId, Target] = {}
        self.now: dict[HostId, TargetState] = {}
        self.listeners: list[Callable[[HostId, bool], None]] = []

    def add_listener(self, on_change: Callable[[HostId, bool], None]) -> None:
        self.listeners.append(on_change)

    def set_targets(self, targets: Mapping[HostId, Target]) -> None:
        self.targets = dict(targets)

    def states(self) -> dict[HostId, TargetState]:
        return dict(self.now)

    def rows(self) -> tuple[LatencyRow, ...]:
        return rows(self.now)

    def start(self) -> None: ...
    def stop(self) -> None: ...

    def say(self, host: HostId, up: bool, rtt: float | None = 10.0) -> None:
        changed = host in self.now and self.now[host].up != up
        self.now[host] = TargetState(up, rtt, 0 if up else 100, 10)
        if changed:
            for listener in self.listeners:
                listener(host, up)


def world(tmp_path):  # noqa: ANN001, ANN201
    me = member(1)  # make_agent's host_1
    gw, other_gw, plain, silent = (replace(member(n), host_id=HostId(f"host_000{n}")) for n in (2, 3, 4, 5))
    gw = replace(gw, role=MemberRole(gateway=Gateway(egress=("198.19.1.0/24",))))
    other_gw = replace(other_gw, role=MemberRole(gateway=Gateway(remote_access=True)))
    agent, backend, link = make_agent(tmp_path, ScriptedApi([snapshot(7, [me, gw, other_gw, plain, silent])]),
                                      heartbeat=3600)
    prober = ScriptedProber()
    agent.prober = prober
    prober.add_listener(lambda host, up: agent.events.put(ProbeChanged(host, up)))
    agent.boot()
    agent.handle(Connected())
    return agent, backend, link, prober, (me, gw, other_gw, plain, silent)


def reports(link) -> list[protocol.StatusReport]:  # noqa: ANN001
    return [protocol.decode_status(p) for t, p in link.published if t == "sm/h/host_1/status"]


def test_it_probes_its_gateways_fast_the_others_slow_and_peers_it_cannot_reach(tmp_path):
    agent, backend, link, prober, (_, gw, other_gw, plain, silent) = world(tmp_path)
    assert prober.targets == {gw.host_id: Target(gw.ipv4, FAST),
                              other_gw.host_id: Target(other_gw.ipv4, SLOW)}
    # WireGuard sent to `silent` (handshake initiations) and never heard back; `plain` answered.
    backend.record_traffic(silent.public_key, None, 0, 444)  # type: ignore[arg-type]
    backend.record_traffic(plain.public_key, int(time.time()) - 5, 100, 100)
    agent.report_status()
    # issue 10, automatic relays: probed fast at once, not down before WireGuard had REKEY_TIMEOUT
    found = prober.targets[silent.host_id]
    assert (found.address, found.kind) == (silent.ipv4, FAST) and plain.host_id not in prober.targets
    assert abs(found.hold_until - (time.monotonic() + 5.0)) < 1.0


def reported_up(agent, link, prober: ScriptedProber, rtts: dict[HostId, float]) -> int:  # noqa: ANN001
    """Every target up at these RTTs, one report sent: how many reports there are."""
    for host, rtt in rtts.items():
        prober.say(host, True, rtt)
    agent.report_status()
    return len(reports(link))


def test_a_gateway_going_down_is_reported_at_once_and_rtt_noise_waits_for_the_heartbeat(tmp_path):
    agent, _, link, prober, (_, gw, other_gw, _, _) = world(tmp_path)
    first = reported_up(agent, link, prober, {gw.host_id: 10.0, other_gw.host_id: 40.0})
    assert reports(link)[-1].latency == (LatencyRow(gw.host_id, 10.0, 0, True),
                                         LatencyRow(other_gw.host_id, 40.0, 0, True))

    prober.say(gw.host_id, True, 14.0)  # noise: nothing at once
    agent.step(timeout=0)
    agent.report_status()
    assert len(reports(link)) == first

    prober.say(gw.host_id, False, 14.0)  # down: the prober's thread queues the change
    t0 = time.monotonic()
    agent.step(timeout=0)  # the loop handles it: a report is due within a second of the last
    assert agent.timers["status"].due is not None and agent.timers["status"].due <= t0 + 1.0 + 0.1
    agent.report_status()
    assert len(reports(link)) == first + 1
    assert reports(link)[-1].latency[0] == LatencyRow(gw.host_id, 14.0, 100, False)


def test_a_ranking_change_beyond_hysteresis_is_reported_at_once(tmp_path):
    agent, _, link, prober, (_, gw, other_gw, _, _) = world(tmp_path)
    n = reported_up(agent, link, prober, {gw.host_id: 30.0, other_gw.host_id: 60.0})
    prober.say(other_gw.host_id, True, 25.0)  # better, but not by 10 ms and a third
    agent.timers["latency"].at(0.0)
    agent.step(timeout=0)
    agent.report_status()
    assert len(reports(link)) == n
    prober.say(gw.host_id, True, 45.0)
    prober.say(other_gw.host_id, True, 20.0)
    agent.timers["latency"].at(0.0)
    t0 = time.monotonic()
    agent.step(timeout=0)  # the latency check: a report within a second of the last
    assert agent.timers["status"].due is not None and agent.timers["status"].due <= t0 + 1.0 + 0.1
    agent.report_status()
    assert len(reports(link)) == n + 1


def test_a_dead_ha_gateway_loses_the_shared_range_at_once_and_gets_it_back_when_it_answers(tmp_path):
    """The fast path of HA failover: the probes' verdict alone moves the range (one peer update,
    no call to the API), to the next gateway the plan ranked for this host; the rest stays."""
    lan = "198.19.1.0/24"
    me = member(1)
    gws = [replace(member(n), host_id=HostId(f"host_000{n}"), role=MemberRole(gateway=Gateway(egress=(lan,))))
           for n in (2, 3, 4)]
    api = ScriptedApi([snapshot(7, [me, *gws])])
    agent, backend, link = make_agent(tmp_path, api, heartbeat=3600)
    prober = ScriptedProber()
    agent.prober = prober
    prober.add_listener(lambda host, up: agent.events.put(ProbeChanged(host, up)))
    agent.boot()
    agent.handle(Connected())  # subscribes, and fetches the network
    for g in gws:
        prober.say(g.host_id, True)
    keys = {g.public_key: g.host_id for g in gws}

    def carrier() -> list[HostId]:
        return [keys[k] for k, p in backend.peers().items() if lan in p.allowed_ips]

    def verdict(host: HostId, up: bool) -> tuple[HostId, set[HostId]]:
        """The probes say ``host`` is up or down: the carrier then, and whose entries changed."""
        before = backend.peers()
        prober.say(host, up)
        agent.step(timeout=0)
        after = backend.peers()
        (now,) = carrier()
        return now, {keys[k] for k in before if before[k] != after.get(k)}

    (first,) = carrier()
    calls = api.calls
    second, changed = verdict(first, False)
    assert second != first and changed == {first, second}  # one move: those two entries, nothing else
    third, changed = verdict(second, False)
    assert third not in (first, second) and changed == {second, third}
    back, changed = verdict(first, True)
    assert back == first and changed == {third, first}  # the plan's first choice answers again
    assert api.calls == calls, "the fast path needs no control plane"


def test_a_relayed_host_probes_its_relay_fast(tmp_path):
    me, relay, other = member(1), replace(member(2), host_id=HostId("host_0002")), \
        replace(member(3), host_id=HostId("host_0003"))
    me = replace(me, role=MemberRole(relayed_by=relay.host_id))
    agent, _, _ = make_agent(tmp_path, ScriptedApi([snapshot(7, [me, relay, other])]), heartbeat=3600)
    prober = ScriptedProber()
    agent.prober = prober
    agent.boot()
    agent.handle(Connected())
    assert prober.targets == {relay.host_id: Target(relay.ipv4, FAST)}


def test_a_report_with_latency_goes_to_the_broker_topic_the_failover_rule_hears(tmp_path):
    """On AWS the API names a Basic Ingest topic, which reaches the status rule alone; a report
    that carries latency goes to the broker topic, so the failover rule hears it too."""
    me = member(1)
    gw = replace(member(2), host_id=HostId("host_0002"),
                 role=MemberRole(gateway=Gateway(egress=("10.9.0.0/16",))))
    ingest = "$aws/rules/skymesh_host_status/sm/h/host_1/status"
    agent, _, link = make_agent(tmp_path, ScriptedApi([snapshot(7, [me, gw])]), heartbeat=3600,
                                status_topic=ingest)
    agent.boot()
    agent.handle(Connected())
    agent.report_status()  # nothing probed yet: where the API said
    prober = ScriptedProber()
    agent.prober = prober
    prober.say(gw.host_id, True, 12.0)
    agent.report_status()
    assert [t for t, _ in link.published] == [ingest, "sm/h/host_1/status"]
