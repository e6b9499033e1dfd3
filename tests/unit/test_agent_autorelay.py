"""The agent's side of automatic relays (issue 10): it finds a peer it cannot reach within a second
of sending to it and reports it down once WireGuard had its fair chance (rule 1), and each end of a
relayed pair probes the other over the underlay and reports ``direct`` at once when that changes
(rule 4). The prober and the echo are scripted here; their sockets run in tests/unit/test_probe.py,
tests/functional/test_underlay.py and tests/e2e/test_autorelay.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from agent.mqtt import Connected
from agent.probe import FAST, TargetState
from agent.runner import DirectChanged, ProbeChanged
from agent.status import collect, render
from agent.underlay import DirectSettings
from chalicelib.domain import protocol
from chalicelib.domain.ids import HostId
from chalicelib.domain.models import Gateway, LatencyRow, MemberRole

from .test_agent_probes import ScriptedProber, reports
from .test_agent_runner import ScriptedApi, make_agent, member, snapshot


class ScriptedUnderlay:
    """The :class:`agent.underlay.Underlay` API, with verdicts set by the test instead of by sockets."""

    def __init__(self) -> None:
        self.settings = DirectSettings()
        self.peers: dict[str, tuple[tuple[str, int], ...]] = {}
        self.answering: set[str] = set()
        self.listeners: list[Callable[[str, bool], None]] = []

    def add_listener(self, on_change: Callable[[str, bool], None]) -> None:
        self.listeners.append(on_change)

    def set_peers(self, peers: Mapping[str, tuple[tuple[str, int], ...]]) -> None:
        self.peers = dict(peers)

    def direct(self) -> frozenset[str]:
        return frozenset(self.answering & set(self.peers))

    def start(self) -> None: ...
    def stop(self) -> None: ...

    def say(self, key: str, direct: bool) -> None:
        (self.answering.add if direct else self.answering.discard)(key)
        for listener in self.listeners:
            listener(key, direct)


def relayed_world(tmp_path):  # noqa: ANN001, ANN201
    """host_1 and host_0003 relayed through the auto-relay gateway host_0002 (recorded on the
    smaller end, host_0003)."""
    relay = replace(member(2), host_id=HostId("host_0002"), role=MemberRole(gateway=Gateway()))
    me = member(1)
    other = replace(member(3), host_id=HostId("host_0003"),
                    role=MemberRole(pair_relays=((me.host_id, relay.host_id),)))
    agent, backend, link = make_agent(tmp_path, ScriptedApi([snapshot(7, [me, relay, other])]),
                                      heartbeat=3600)
    echo = ScriptedUnderlay()
    agent.underlay = echo
    echo.add_listener(lambda key, direct: agent.events.put(DirectChanged(key, direct)))
    agent.boot()
    agent.handle(Connected())
    return agent, backend, link, echo, (me, relay, other)


def test_the_ends_of_a_relayed_pair_probe_each_other_and_report_direct_at_once(tmp_path):
    agent, _, link, echo, (me, relay, other) = relayed_world(tmp_path)
    assert echo.peers == {other.public_key: (("198.18.0.3", 51821),)}  # its endpoint, WireGuard port + 1
    agent.report_status()
    n = len(reports(link))
    assert reports(link)[-1].direct == ()

    echo.say(other.public_key, True)  # the echo thread: five answers over 30 s
    t0 = time.monotonic()
    agent.step(timeout=0)
    assert agent.timers["status"].due is not None and agent.timers["status"].due <= t0 + 1.0 + 0.1
    agent.report_status()
    assert len(reports(link)) == n + 1 and reports(link)[-1].direct == (other.host_id,)
    assert agent.dir.load_runtime()["direct"] == {other.host_id: True}

    echo.say(other.public_key, False)  # the first miss drops it, at once too
    agent.step(timeout=0)
    agent.report_status()
    assert len(reports(link)) == n + 2 and reports(link)[-1].direct == ()

    # the control plane ended the pair: the echo stops
    agent.on_message(protocol.network_topic("net_a"), protocol.encode(protocol.Delta(
        network_id=me.network_id, seq=8, upsert=(replace(other, role=MemberRole()),))))
    assert echo.peers == {}


def test_status_shows_each_relayed_peer_its_via_and_the_direct_verdict(tmp_path):
    agent, backend, _, _, (_, relay, other) = relayed_world(tmp_path)
    runtime = {"running": True, "direct": {other.host_id: True}}
    st = collect(agent.state, agent.tracker, backend.stats(), runtime, backend.name)
    (pair,) = st["networks"][0]["relayed_pairs"]
    assert pair == {"id": other.host_id, "name": other.name, "via": relay.host_id, "via_name": relay.name,
                    "direct": True}
    assert (f"{other.name} ({other.host_id}) relayed through {relay.name} ({relay.host_id}); "
            "direct path: answers") in render(st)


def test_a_peer_sent_to_without_a_handshake_is_found_at_once_and_reported_down_after_the_bound(tmp_path):
    me, other = member(1), replace(member(3), host_id=HostId("host_0003"))
    agent, backend, link = make_agent(tmp_path, ScriptedApi([snapshot(7, [me, other])]), heartbeat=3600)
    prober = ScriptedProber()
    agent.prober = prober
    prober.add_listener(lambda host, up: agent.events.put(ProbeChanged(host, up)))
    agent.boot()
    agent.handle(Connected())
    agent.report_status()
    t0 = time.monotonic()
    # peers just came: the device is read about once a second, not at the 10 s status check
    watch = agent.timers["watch"]
    assert watch.due is not None and watch.due <= t0 + 1.0 + 0.1
    backend.record_traffic(other.public_key, None, 0, 148)  # type: ignore[arg-type]  # an initiation, no answer
    watch.at(0.0)
    agent.step(timeout=0)
    target = prober.targets[other.host_id]
    assert target.kind == FAST and t0 + 5.0 - 0.1 <= target.hold_until <= time.monotonic() + 5.0
    assert watch.due is not None and watch.due <= time.monotonic() + 1.0 + 0.1  # undecided: read again soon

    n = len(reports(link))
    prober.now[other.host_id] = TargetState(None, None, 100, 8)  # misses within the hold say nothing
    prober.say(other.host_id, False, None)  # the first miss past it: down
    t1 = time.monotonic()
    agent.step(timeout=0)
    assert agent.timers["status"].due is not None and agent.timers["status"].due <= t1 + 1.0 + 0.1
    agent.report_status()
    assert len(reports(link)) == n + 1
    assert reports(link)[-1].latency == (LatencyRow(other.host_id, None, 100, False),)
