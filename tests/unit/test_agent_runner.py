"""The agent's run loop with an in-memory device, a scripted API and a recording MQTT link.

The same loop runs against real wireguard-go, Mosquitto and the local API in
tests/e2e; here each behaviour is pinned quickly and exactly.
"""

from __future__ import annotations

import threading
import time

import pytest

from agent import keys
from agent.api import ApiError, FullConfig, Unreachable
from agent.mqtt import Connected, Disconnected, Received
from agent.runner import Agent, Timings
from agent.state import AgentState, StateDir
from agent.wg.base import BackendError
from agent.wg.memory import MemoryBackend
from chalicelib.domain import protocol
from chalicelib.domain.ids import HostId, NetworkId
from chalicelib.domain.models import Member, Network

NET = "net_a"


def member(n: int) -> Member:
    return Member(network_id=NetworkId(NET), host_id=HostId(f"host_{n}"), name=f"h{n}",
                  public_key=keys.wireguard_public_key(keys.new_wireguard_key()),
                  ipv4=f"100.64.0.{n}", ipv6=f"fd00:1::{n}", listen_port=51820,
                  endpoints=(f"198.18.0.{n}:51820",))


def snapshot(seq: int, members: list[Member]) -> protocol.Snapshot:
    return protocol.Snapshot(Network(id=NetworkId(NET), name="a", ipv4_cidr="100.64.0.0/16",
                                     ipv6_cidr="fd00:1::/64", seq=seq), tuple(members))


class ScriptedApi:
    """Answers /config with ``self.answer`` (a snapshot list, a FullConfig, or an exception to
    raise), as an API that ignores ``known`` would; ``self.known`` records what each call named."""

    def __init__(self, answer) -> None:  # noqa: ANN001
        self.answer = answer
        self.calls = 0
        self.known: list[dict[str, int] | None] = []

    def config(self, host_id: str, known: dict[str, int] | None = None) -> FullConfig:
        self.calls += 1
        self.known.append(known)
        if isinstance(self.answer, Exception):
            raise self.answer
        if isinstance(self.answer, FullConfig):
            return self.answer
        return FullConfig(host_id=host_id, snapshots=tuple(self.answer))

    def update_endpoints(self, host_id: str, endpoints: list[str]) -> None:
        pass


class RecordingLink:
    def __init__(self) -> None:
        self.subscribed: list[str] = []
        self.published: list[tuple[str, bytes]] = []

    def start(self) -> None: ...
    def stop(self) -> None: ...

    def subscribe(self, topics: list[str], timeout: float = 0) -> list[str]:
        self.subscribed += topics
        return []

    def unsubscribe(self, topics: list[str], timeout: float = 0) -> None:
        self.subscribed = [t for t in self.subscribed if t not in topics]

    def publish(self, topic: str, payload: bytes) -> None:
        self.published.append((topic, payload))


@pytest.fixture
def members() -> list[Member]:
    return [member(i) for i in (1, 2, 3)]


def make_agent(tmp_path, api, cache=(), heartbeat: float = 300.0, status_topic: str = "",
               ) -> tuple[Agent, MemoryBackend, RecordingLink]:
    sd = StateDir(tmp_path / "state")
    sd.create()
    sd.save(AgentState(server="http://198.18.0.1:8787", host_id="host_1", name="h1", host_token="t",
                       interface="sm0", backend="memory", listen_port=51820, mqtt_endpoint="198.18.0.1",
                       mqtt_port=8883, client_id="host_1", endpoints=("198.18.0.1:51820",),
                       status_topic=status_topic))
    sd.save_secrets(wg_key=keys.new_wireguard_key(), tls_key=keys.new_tls_key())
    if cache:
        sd.save_cache(list(cache))
    backend, link = MemoryBackend("sm0"), RecordingLink()
    agent = Agent(sd, backend=backend, netsetup=None, api=api, link_factory=lambda _events: link,
                  timings=Timings(heartbeat=heartbeat, cache_delay=0))
    agent.link = link
    return agent, backend, link


def peer_keys(backend: MemoryBackend) -> set[str]:
    return set(backend.peers())


def test_boot_brings_the_cached_tunnels_up_with_the_control_plane_down(tmp_path, members):
    api = ScriptedApi(Unreachable("cannot reach http://198.18.0.1:8787: connection refused"))
    agent, backend, _ = make_agent(tmp_path, api, cache=[snapshot(4, members)])
    agent.boot()
    agent.resync()  # fails: nothing is torn down
    assert peer_keys(backend) == {members[1].public_key, members[2].public_key}
    assert api.calls == 1 and agent.error and "connection refused" in agent.error


def test_connect_subscribes_then_resyncs(tmp_path, members):
    api = ScriptedApi([snapshot(7, members)])
    agent, backend, link = make_agent(tmp_path, api)
    agent.boot()
    agent.handle(Connected())
    assert set(link.subscribed) == {"sm/h/host_1/in", "sm/n/net_a"}
    assert api.calls == 1 and agent.tracker.seq(NET) == 7
    assert peer_keys(backend) == {members[1].public_key, members[2].public_key}
    # The next boot starts from what was applied (written once the burst is over).
    agent.step(timeout=0)
    assert agent.dir.load_cache() == [snapshot(7, members)]


def test_a_delta_in_sequence_is_one_single_peer_change(tmp_path, members):
    agent, backend, _ = make_agent(tmp_path, ScriptedApi([snapshot(7, members)]))
    agent.boot()
    agent.handle(Connected())
    before = len(backend.applies)
    newcomer = member(4)
    agent.handle(Received("sm/n/net_a", protocol.encode(protocol.Delta(NET, 8, upsert=(newcomer,)))))
    (diff,) = backend.applies[before:]  # exactly one change reached the device…
    assert [p.public_key for p in diff.upsert] == [newcomer.public_key] and diff.remove == ()  # …one peer
    assert backend.creations == 1  # the device was never recreated
    agent.handle(Received("sm/n/net_a", protocol.encode(protocol.Delta(NET, 9, remove=("host_2",)))))
    assert backend.applies[-1].remove == (members[1].public_key,) and not backend.applies[-1].upsert


def test_a_gap_means_a_full_resync(tmp_path, members):
    api = ScriptedApi([snapshot(7, members)])
    agent, backend, _ = make_agent(tmp_path, api)
    agent.boot()
    agent.handle(Connected())
    later = [*members, member(5)]
    api.answer = [snapshot(10, later)]
    agent.handle(Received("sm/n/net_a", protocol.encode(protocol.Delta(NET, 10, remove=("host_3",)))))
    assert api.calls == 2 and agent.tracker.seq(NET) == 10
    assert members[2].public_key in peer_keys(backend)  # the delta at 10 was not applied on top of 7
    assert later[3].public_key in peer_keys(backend)


def test_a_gap_is_healed_by_the_deltas_missed_one_peer_at_a_time(tmp_path, members):
    api = ScriptedApi([snapshot(7, members)])
    agent, backend, _ = make_agent(tmp_path, api)
    agent.boot()
    agent.handle(Connected())
    newcomer = member(5)
    missed = (protocol.Delta(NET, 8, upsert=(newcomer,)), protocol.Delta(NET, 9, remove=("host_3",)))
    api.answer = FullConfig("host_1", (), (protocol.CatchUp(NET, 9, missed),))
    before = len(backend.applies)
    agent.handle(Received("sm/n/net_a", protocol.encode(protocol.Delta(NET, 9, remove=("host_3",)))))
    assert api.known[-1] == {NET: 7} and agent.tracker.seq(NET) == 9
    (diff,) = backend.applies[before:]  # the two missed deltas, not the whole network again
    assert [p.public_key for p in diff.upsert] == [newcomer.public_key]
    assert diff.remove == (members[2].public_key,)


def test_a_catch_up_that_does_not_apply_falls_back_to_full_snapshots(tmp_path, members):
    api = ScriptedApi([snapshot(7, members)])
    agent, backend, _ = make_agent(tmp_path, api)
    agent.boot()
    agent.handle(Connected())
    later = [*members, member(5)]
    answers = iter([FullConfig("host_1", (), (protocol.CatchUp(NET, 12),)),  # says 12, brings nothing
                    FullConfig("host_1", (snapshot(12, later),))])
    api.config = lambda host_id, known=None: (api.known.append(known), next(answers))[1]  # type: ignore
    agent.resync()
    assert api.known[-2:] == [{NET: 7}, None] and agent.tracker.seq(NET) == 12
    assert later[3].public_key in peer_keys(backend)


def test_a_replayed_or_foreign_message_changes_nothing(tmp_path, members):
    api = ScriptedApi([snapshot(7, members)])
    agent, backend, _ = make_agent(tmp_path, api)
    agent.boot()
    agent.handle(Connected())
    applies = len(backend.applies)
    agent.handle(Received("sm/n/net_a", protocol.encode(protocol.Delta(NET, 7, remove=("host_2",)))))
    agent.handle(Received("sm/n/net_a", b'{"v": 99, "type": "delta"}'))
    agent.handle(Received("sm/n/net_a", b"\xff not json"))
    assert len(backend.applies) == applies and api.calls == 1


def test_a_resync_command_fetches_the_config(tmp_path, members):
    api = ScriptedApi([snapshot(7, members)])
    agent, _, _ = make_agent(tmp_path, api)
    agent.boot()
    agent.handle(Received("sm/h/host_1/in", protocol.encode(protocol.Command("resync"))))
    assert api.calls == 1


def test_a_deleted_host_drops_its_peers_but_an_outage_does_not(tmp_path, members):
    api = ScriptedApi([snapshot(7, members)])
    agent, backend, _ = make_agent(tmp_path, api)
    agent.boot()
    agent.resync()
    api.answer = ApiError(503, "unavailable", "the database did not answer")
    agent.resync()
    assert len(peer_keys(backend)) == 2
    agent.handle(Disconnected("connection reset"))
    assert len(peer_keys(backend)) == 2
    api.answer = ApiError(401, "unauthorized", "unknown host token")
    agent.resync()
    assert peer_keys(backend) == set() and backend.exists()


def test_status_is_reported_on_change_and_otherwise_only_at_the_heartbeat(tmp_path, members):
    api = ScriptedApi([snapshot(7, members)])
    agent, backend, link = make_agent(tmp_path, api, heartbeat=3600)
    agent.boot()
    agent.handle(Connected())

    def reports() -> list:
        return [protocol.decode(p) for t, p in link.published if t == "sm/h/host_1/status"]

    agent.report_status()
    agent.report_status()
    assert len(reports()) == 1 and reports()[0].peers == ()  # nobody talked yet: nothing to list
    backend.record_traffic(members[1].public_key, int(time.time()) - 5, 1500, 900)
    agent.report_status()  # a handshake appeared: reported at once
    assert len(reports()) == 2
    (peer,) = reports()[1].peers
    assert (peer.public_key, peer.rx_bytes, peer.tx_bytes) == (members[1].public_key, 1500, 900)
    assert 0 <= peer.latest_handshake_age < 60
    backend.record_traffic(members[1].public_key, int(time.time()) - 5, 3000, 1800)
    agent.report_status()  # only the counters moved: that waits for the heartbeat
    assert len(reports()) == 2


def test_a_gateway_reports_its_most_recent_handshakes_within_the_protocols_bound(tmp_path):
    many = [Member(network_id=NetworkId(NET), host_id=HostId(f"host_{n}"), name=f"h{n}",
                   public_key=keys.wireguard_public_key(keys.new_wireguard_key()),
                   ipv4=f"100.64.{n // 250}.{n % 250 + 1}", ipv6=f"fd00:1::{n:x}", listen_port=51820)
            for n in range(2, protocol.MAX_REPORT_PEERS + 50)]
    agent, backend, link = make_agent(tmp_path, ScriptedApi([snapshot(7, [member(1), *many])]))
    agent.boot()
    agent.handle(Connected())
    now = int(time.time())
    for age, m in enumerate(many):  # many[0] talked most recently
        backend.record_traffic(m.public_key, now - 10 - age, 100, 100)
    agent.report_status()
    (payload,) = [p for t, p in link.published if t == "sm/h/host_1/status"]
    report = protocol.decode_status(payload)  # what the control plane accepts
    assert {p.public_key for p in report.peers} == {m.public_key for m in many[:protocol.MAX_REPORT_PEERS]}


def test_not_connected_means_no_reports(tmp_path, members):
    agent, _, link = make_agent(tmp_path, ScriptedApi([snapshot(7, members)]))
    agent.boot()
    agent.report_status()
    assert link.published == []


def test_a_device_that_vanished_is_brought_back_at_the_next_check(tmp_path, members):
    agent, backend, _ = make_agent(tmp_path, ScriptedApi([snapshot(7, members)]))
    agent.boot()
    agent.resync()
    backend.delete()  # wireguard-go was killed, or someone ran `ip link del`
    agent.report_status()
    assert backend.exists() and backend.creations == 2
    assert peer_keys(backend) == {members[1].public_key, members[2].public_key}


def test_reports_go_where_the_api_said_at_registration(tmp_path, members):
    ingest = "$aws/rules/skymesh_host_status/sm/h/host_1/status"
    agent, _, link = make_agent(tmp_path, ScriptedApi([snapshot(7, members)]), status_topic=ingest)
    agent.boot()
    agent.handle(Connected())
    agent.report_status()
    assert [t for t, _ in link.published] == [ingest]


# --------------------------------------------------------------- issue 12: offline within seconds
def test_every_connect_reports_again_even_unchanged_so_a_host_marked_offline_by_its_will_is_online(
        tmp_path, members):
    agent, _, link = make_agent(tmp_path, ScriptedApi([snapshot(7, members)]), heartbeat=3600)
    agent.boot()
    agent.handle(Connected())
    agent.report_status()
    agent.handle(Disconnected("connection reset"))  # the broker published its will: offline
    agent.handle(Connected())
    agent.timers.run_due(time.monotonic())  # the report is due at once, not at the heartbeat
    statuses = [protocol.decode_status(p) for t, p in link.published if t == "sm/h/host_1/status"]
    assert len(statuses) == 2 and not any(s.offline for s in statuses)


def test_a_clean_stop_says_offline_before_the_link_stops(tmp_path, members):
    agent, _, link = make_agent(tmp_path, ScriptedApi([snapshot(7, members)]))
    stopped_after: list[int] = []
    link.stop = lambda: stopped_after.append(len(link.published))  # type: ignore[method-assign]
    agent._link_factory = lambda events: (events.put(Connected()), link)[1]
    done = threading.Thread(target=agent.run, daemon=True)
    done.start()
    wait = time.monotonic() + 10
    while not agent.connected and time.monotonic() < wait:
        time.sleep(0.01)  # the loop's own thread connects; bounded
    agent.stop()
    done.join(timeout=10)
    assert not done.is_alive()
    topic, payload = link.published[-1]
    assert topic == "sm/h/host_1/status" and protocol.decode_status(payload).offline is True
    assert stopped_after == [len(link.published)]  # published before the link stopped


# --------------------------------------------------------------- issue 7: lifecycle and guards
def test_a_deleted_host_stops_the_agent_once_and_no_boot_brings_its_peers_back(tmp_path, members):
    api = ScriptedApi([snapshot(7, members)])
    agent, backend, _ = make_agent(tmp_path, api)
    agent.boot()
    agent.resync()
    agent.step(timeout=0)  # the cache now holds the network
    assert agent.dir.load_cache()
    api.answer = ApiError(401, "unauthorized", "unknown host token (was the host deleted?)")
    done = threading.Thread(target=agent.run, daemon=True)
    done.start()
    done.join(timeout=10)
    stuck = done.is_alive()
    agent.stop()
    assert not stuck, "the agent kept retrying a host the control plane deleted"
    assert api.calls == 2  # asked once, then stopped: no retry every minute
    assert agent.deleted and "skymesh-agent leave" in agent.deleted
    assert peer_keys(backend) == set() and backend.exists()  # peers dropped, the device is leave's
    assert agent.dir.load_cache() == []  # a restart or a reboot does not bring the peers back
    runtime = agent.dir.load_runtime()
    assert runtime["running"] is False and runtime["stopped"] == "host_deleted"


def test_an_error_page_that_is_not_the_apis_is_an_outage_not_a_deletion(tmp_path, members):
    api = ScriptedApi([snapshot(7, members)])
    agent, backend, _ = make_agent(tmp_path, api)
    agent.boot()
    agent.resync()
    api.answer = ApiError(404, "", "<html>Not Found</html>")  # a proxy, or a gateway in front of it
    agent.resync()
    assert len(peer_keys(backend)) == 2 and agent.deleted is None and agent.timers["resync"].due is not None


class FlakyLink(RecordingLink):
    """Subscribes after ``failures`` timeouts; refuses the topics in ``refuse`` once."""

    def __init__(self, failures: int = 0, refuse: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.failures, self.refuse, self.attempts = failures, set(refuse), 0

    def subscribe(self, topics: list[str], timeout: float = 0) -> list[str]:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise TimeoutError()
        refused = sorted(self.refuse & set(topics))
        self.refuse -= set(refused)
        self.subscribed += [t for t in topics if t not in refused]
        return refused


def test_a_subscription_that_fails_while_connected_is_retried_then_a_resync_catches_up(tmp_path, members):
    api = ScriptedApi([snapshot(7, members)])
    agent, _, _ = make_agent(tmp_path, api)
    agent.t = Timings(cache_delay=0, subscribe_min=0.0, subscribe_max=0.0)  # retries due at once
    link = agent.link = FlakyLink(failures=2)
    agent.boot()
    agent.handle(Connected())
    subs = agent.dir.load_runtime()["subscriptions"]  # the resync learnt net_a; the retry will add it
    assert {t: s["state"] for t, s in subs.items()} == {"sm/h/host_1/in": "failed"}
    assert subs["sm/h/host_1/in"]["error"] == "TimeoutError"
    calls = api.calls
    for _ in range(5):
        agent.step(timeout=0)
    assert set(link.subscribed) == {"sm/h/host_1/in", "sm/n/net_a"} and link.attempts == 3
    assert api.calls == calls + 1  # what was published while it heard nothing
    subs = agent.dir.load_runtime()["subscriptions"]
    assert {s["state"] for s in subs.values()} == {"subscribed"}
    assert agent.dir.load_runtime()["subscriptions_retry_at"] is None


def test_a_refused_subscription_is_retried_with_growing_backoff(tmp_path, members):
    agent, _, _ = make_agent(tmp_path, ScriptedApi([snapshot(7, members)]))
    link = agent.link = FlakyLink(refuse=("sm/n/net_a",))
    agent.boot()
    agent.handle(Connected())
    assert link.subscribed == ["sm/h/host_1/in"]
    assert agent.dir.load_runtime()["subscriptions"]["sm/n/net_a"]["state"] == "refused"
    first = agent.timers["subscribe"].due
    assert first is not None and first - time.monotonic() <= agent.t.subscribe_min
    agent.timers["subscribe"].at(time.monotonic())  # due now
    agent.step(timeout=0)
    assert "sm/n/net_a" in link.subscribed and agent.timers["subscribe"].due is None


def test_a_full_reconcile_keeps_an_endpoint_wireguard_roamed_to(tmp_path, members):
    api = ScriptedApi([snapshot(7, members)])
    agent, backend, _ = make_agent(tmp_path, api, heartbeat=0)
    agent.boot()
    agent.resync()
    roamed = "198.19.7.7:40123"  # the peer's NAT mapping, learnt by WireGuard from its packets
    backend.roam(members[1].public_key, roamed)
    agent.report_status()  # heartbeat: the whole device is read back and reconciled
    agent.resync()
    assert backend.peers()[members[1].public_key].endpoint == roamed


def test_a_failed_apply_is_retried(tmp_path, members):
    class Refusing(MemoryBackend):
        failures = 0

        def ensure_device(self, private_key: str, listen_port: int) -> bool:
            if self.failures:
                self.failures -= 1
                raise BackendError("wireguard-go did not start")
            return super().ensure_device(private_key, listen_port)

    agent, _, _ = make_agent(tmp_path, ScriptedApi([snapshot(7, members)]))
    backend = agent.backend = Refusing("sm0")
    agent.t = Timings(apply_retry=0, cache_delay=0)
    agent.boot()
    backend.failures = 1
    agent.resync()
    assert peer_keys(backend) == set() and "wireguard-go did not start" in agent.error
    agent.step(timeout=0)
    assert peer_keys(backend) == {members[1].public_key, members[2].public_key} and agent.error is None


def test_a_plan_with_two_peers_on_one_allowed_ip_is_an_error_not_a_silent_override(tmp_path, members):
    """WireGuard would give the address to whichever peer came last; the agent keeps what it has
    applied and says why instead."""
    agent, backend, _ = make_agent(tmp_path, ScriptedApi([snapshot(7, members)]))
    agent.boot()
    agent.resync()
    before = backend.peers()
    clash = Member(**{**member(4).__dict__, "ipv4": members[1].ipv4})  # host 4 claims host 2's /32
    agent.api = ScriptedApi([snapshot(8, [*members, clash])])
    agent.resync()
    assert backend.peers() == before
    assert agent.error and f"both claim {members[1].ipv4}/32" in agent.error
