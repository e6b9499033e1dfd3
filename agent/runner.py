"""``skymesh-agent run``: keep this host's WireGuard device converged with its networks.

One worker thread owns all state. It

1. applies the cached snapshots at once, so a reboot with the control plane
   down still brings the tunnels up (fail open: nothing is ever torn down
   because the API or the broker is unreachable);
2. starts the MQTT link (the CRT client reconnects with jittered backoff);
3. on every (re)connect subscribes to its inbox and its networks' broadcasts,
   then asks the API over HTTPS for what it missed (a resync: the deltas since
   the seq it has of each network, or full snapshots), so nothing published
   while it was away is missed; a subscription that fails while the connection
   stays up (a timeout under load, a refusal) is retried with jittered backoff,
   and a resync follows the first success, for what it did not hear meanwhile;
4. applies each broadcast delta in sequence; a gap or a change of membership
   means another resync;
5. reports its status when something a person would notice changes (a peer
   handshake appears or goes stale, its endpoints, a probed gateway goes down or
   up or its ranking changes beyond hysteresis: :mod:`agent.probe`) and otherwise
   at a slow heartbeat (5 minutes by default), so a large fleet stays cheap;
6. takes part in the gateway groups this host is a member of (issue 11, :mod:`agent.groups`):
   the group's key, its interface and the election, converged after every apply; a role change
   (from the election's thread) is an event: the forwarding follows and a report goes out at once;
7. stops when the control plane says, in its own error shape, that this host
   no longer exists (401/403/404 from ``/config``): it drops the peers, empties
   the cache so no later boot brings them back, says so once and ends with
   :data:`EXIT_HOST_DELETED`. The device (now without peers, addresses or routes)
   and the state directory stay: ``skymesh-agent leave`` removes them, and needs them
   to do so. An outage, or an error page that is not the API's, changes nothing.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import queue
import random
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from chalicelib.domain import protocol, validate
from chalicelib.domain.device import AllowedIpConflictError, DeviceConfig, PeerConfig, peer_diff
from chalicelib.domain.errors import InvalidInputError
from chalicelib.domain.ids import HostId
from chalicelib.domain.models import LatencyRow, PeerStatus

from . import __version__
from .api import ApiClient, ApiError, Unreachable
from .converge import Outcome, Tracker
from .groups import GroupMembership
from .mqtt import Connected, Disconnected, Received
from .netconf import NetConfError
from .probe import FAST, SLOW, ProbeSettings, Target, TargetState, choose_targets, worth_reporting_now
from .reach import Attempts
from .state import StateDir
from .timers import Backoff, Task, Timers
from .underlay import DirectSettings, echo_addresses
from .wg.base import Backend, BackendError, DevicePeer

log = logging.getLogger("skymesh.agent")

__all__ = ["Agent", "Timings", "HANDSHAKE_FRESH", "EXIT_HOST_DELETED", "SubState", "offline_message"]

HANDSHAKE_FRESH = 180  # seconds: WireGuard re-keys every 2 minutes on an active tunnel
# `run`'s exit status once the control plane deleted this host: EX_CONFIG of sysexits.h, which
# systemd names CONFIG. The unit lists it in RestartPreventExitStatus= (a restart cannot help).
EXIT_HOST_DELETED = 78


def offline_message(host_id: str) -> tuple[str, bytes]:
    """(topic, payload) of this host's offline report: what a clean stop publishes and what the MQTT
    link sets as its last will. On the broker's status topic, never Basic Ingest (a will is an
    ordinary publish of the broker's), which the status rule reads too."""
    return (protocol.host_status_topic(host_id),
            protocol.encode(protocol.StatusReport(agent_version=__version__, offline=True)))


class Link(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def subscribe(self, topics: list[str], timeout: float = ...) -> list[str]: ...
    def unsubscribe(self, topics: list[str], timeout: float = ...) -> None: ...
    def publish(self, topic: str, payload: bytes) -> None: ...


class NetSetup(Protocol):
    def apply(self, addresses: tuple[str, ...], routes: tuple[str, ...], mtu: int) -> object: ...


class Routing(Protocol):
    """Full-tunnel policy routing (:class:`agent.fulltunnel.FullTunnel`): on, or gone."""

    table: int

    def apply(self, on: bool, bypass: Sequence[str] = ...) -> bool: ...


class Forwarder(Protocol):
    """Our nftables table (:class:`agent.gateway.Forwarding`): a gateway's forwarding and NAT, a
    full tunnel's marks; none of them: no table."""

    def apply(self, forwards: tuple[str, ...], nat: tuple[str, ...], *, full_tunnel_mark: int = 0,
              addresses: tuple[str, ...] = (), groups: tuple[str, ...] = ()) -> bool: ...


@dataclass(frozen=True)
class Timings:
    heartbeat: float = 300.0  # a status report at least this often
    status_check: float = 10.0  # how often to check the device and look for a change worth reporting
    resync_min: float = 1.0  # retry backoff of a failed resync…
    # …doubling up to this; each wait is uniform(d/2, d). When the API comes back after an
    # outage, every agent's next try is at most resync_max away: 8 s + one resync (≈ 1 s)
    # keeps the 10 s target. The herd this allows: N agents retry at N / 6 s on average
    # (mean of [4, 8] s) while the API is down — 10,000 agents ≈ 1,700 requests/s, under API
    # Gateway's 10,000 requests/s account default — and reach it over a 4 s window when it is
    # back: with Lambda at ~0.1 s per /config that is 10,000 / 4 s × 0.1 s ≈ 250 concurrent
    # executions, under the default account limit of 1,000 (cold starts ~1 s each would need
    # more: throttled calls answer 429 and are retried after resync_max).
    resync_max: float = 8.0
    apply_retry: float = 5.0
    cache_delay: float = 1.0  # a burst of deltas is written to the cache once
    subscribe_min: float = 1.0  # retry backoff of a failed or refused subscription while connected…
    subscribe_max: float = 60.0  # …doubling up to this, with jitter


class Probing(Protocol):
    """The prober (:class:`agent.probe.Prober`): targets in, per-target state out, a callback on up/down."""

    settings: ProbeSettings

    def add_listener(self, on_change: Callable[[HostId, bool], None]) -> None: ...
    def set_targets(self, targets: Mapping[HostId, Target]) -> None: ...
    def rows(self) -> tuple[LatencyRow, ...]: ...
    def states(self) -> dict[HostId, TargetState]: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...


class DirectProbing(Protocol):
    """The underlay echo (:class:`agent.underlay.Underlay`): the peers of this host's relayed pairs
    in (public key → echo addresses), the ones whose direct path answers out, a callback on a flip."""

    settings: DirectSettings

    def add_listener(self, on_change: Callable[[str, bool], None]) -> None: ...
    def set_peers(self, peers: Mapping[str, tuple[tuple[str, int], ...]]) -> None: ...
    def direct(self) -> frozenset[str]: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...


@dataclass(frozen=True)
class DirectChanged:
    """The direct path to a relayed peer started or stopped answering (queued by the echo thread)."""

    public_key: str
    direct: bool


@dataclass(frozen=True)
class ProbeChanged:
    """A probed target went down or up (queued by the prober's thread)."""

    host_id: str
    up: bool


@dataclass(frozen=True)
class GroupRoleChanged:
    """This host became active or standby in a gateway group (queued by the election's thread)."""


@dataclass(frozen=True)
class SubState:
    """One topic this host must hear: ``subscribed``, ``failed`` (no answer, an error) or ``refused``."""

    state: str
    error: str = ""


class Agent:
    def __init__(self, state_dir: StateDir, *, backend: Backend, netsetup: NetSetup | None,
                 api: ApiClient | None = None, link_factory: Callable[[queue.Queue], Link] | None = None,
                 discover_endpoints: Callable[[], list[str]] | None = None,
                 timings: Timings = Timings(), rng: random.Random | None = None,
                 on_applied: Callable[[Tracker], None] | None = None,
                 routing: Routing | None = None, forwarding: Forwarder | None = None,
                 prober: Probing | None = None, underlay: DirectProbing | None = None,
                 attempts: Attempts | None = None, groups: GroupMembership | None = None) -> None:
        self.dir = state_dir
        self.state = state_dir.load()
        self.backend = backend
        self.netsetup = netsetup
        self.routing = routing
        self.forwarding = forwarding
        self._mark_checked = False  # whether the device is known to carry no full-tunnel mark
        self._bypass: dict[str, set[str]] = {}  # control plane host name → its addresses last resolved
        self.api = api or ApiClient(self.state.server, self.state.host_token)
        self.events: queue.Queue = queue.Queue()
        self._link_factory = link_factory
        self._discover = discover_endpoints
        self._rng = rng or random.Random()
        self._on_applied = on_applied
        self.tracker = Tracker(self.state.host_id, state_dir.load_cache())
        self._wg_key = state_dir.wg_key()
        self._applied: dict[str, PeerConfig] = {}
        self._cached_seqs: dict[str, int | None] = {n: self.tracker.seq(n) for n in self.tracker.network_ids}
        self._subs: dict[str, SubState] = {}  # topic → state, on the current connection
        self.link: Link | None = None
        self.connected = False
        self._timings = timings
        # The loop's jobs, checked in this order once per step; the status check is due at once.
        self.timers = Timers()
        self._resync_timer = self.timers.add(Task(
            "resync", self.resync, backoff=Backoff(timings.resync_min, timings.resync_max)))
        # retries what failed to subscribe, then resyncs for what was published meanwhile
        self._subscribe_timer = self.timers.add(Task(
            "subscribe", self._retry_subscriptions,
            backoff=Backoff(timings.subscribe_min, timings.subscribe_max)))
        self._apply_timer = self.timers.add(Task("apply", self.apply))  # after a failure to configure
        self._cache_timer = self.timers.add(Task("cache", self.save_cache))  # a burst of deltas, once
        self._status_timer = self.timers.add(Task("status", self.report_status, due=0.0))
        self._needs_full = True
        self._reconciled_at = float("-inf")
        self._last_report: tuple | None = None
        self._last_report_at = float("-inf")
        self._endpoints_checked = False
        self.last_sync: float | None = None
        self._runtime_written: dict | None = None
        self.error: str | None = None
        self.deleted: str | None = None  # why it stopped: the control plane deleted this host
        self.upgrade: str | None = None  # the control plane speaks a newer schema: what to tell people
        self._newer_seen: object = None
        self._newer_resync_at = float("-inf")
        self._stop = threading.Event()
        # issue 10: probes. The prober's thread only queues ProbeChanged; this thread reads its states.
        self.prober = prober
        self._reported_latency: tuple[LatencyRow, ...] = ()  # the latency section of the last report sent
        self._ranked: set[HostId] = set()  # the gateways among the targets (their ranking is worth a report)
        # the peers it tries to reach without a session (autorelay rule 1), from the device's counters
        self._attempts = attempts or Attempts()
        self._latency_timer = self.timers.add(Task("latency", self._check_latency))
        self._watch_timer = self.timers.add(Task("watch", self._watch_device))
        if prober is not None:
            prober.add_listener(lambda host, up: self.events.put(ProbeChanged(host, up)))
            self._latency_timer.at(0.0)
            self._watch_timer.at(0.0)
        # autorelay rule 4: the echo over the underlay to the peers of this host's relayed pairs
        self.underlay = underlay
        self._paired: dict[str, tuple[HostId, HostId]] = {}  # relayed peer's key → (its host id, via)
        if underlay is not None:
            underlay.add_listener(lambda key, direct: self.events.put(DirectChanged(key, direct)))
        # issue 11: gateway groups; the election's thread only queues GroupRoleChanged
        self.groups = groups
        self._desired: DeviceConfig | None = None  # the last device applied in full (its roles)
        self._forwarded_groups: tuple[str, ...] = ()
        self._groups_timer = self.timers.add(Task("groups", self._sync_groups))
        if groups is not None:
            groups.bind(up=self._members_up, on_role=lambda: self.events.put(GroupRoleChanged()))

    @property
    def t(self) -> Timings:
        return self._timings

    @t.setter
    def t(self, timings: Timings) -> None:
        """New timings hold from the next wait on (a backoff under way keeps its step until reset)."""
        self._timings = timings
        self._resync_timer.backoff = Backoff(timings.resync_min, timings.resync_max)
        self._subscribe_timer.backoff = Backoff(timings.subscribe_min, timings.subscribe_max)

    # ------------------------------------------------------------------ loop
    def stop(self) -> None:
        """Ask the loop to end (safe from a signal handler or another thread)."""
        self._stop.set()
        self.events.put(None)

    def run(self) -> None:
        self.boot()
        if self._link_factory is not None:
            self.link = self._link_factory(self.events)
            self.link.start()
        self._resync_timer.at(time.monotonic())  # do not wait for MQTT to learn what changed while down
        if self.prober is not None:
            self.prober.start()
        if self.underlay is not None:
            self.underlay.start()
        try:
            while not self._stop.is_set():
                self.step(timeout=self._next_timer())
        finally:
            if self.groups is not None:
                self.groups.stop()  # a clean stop withdraws: the floating address goes first
                self._apply_forwarding()
            if self.prober is not None:
                self.prober.stop()
            if self.underlay is not None:
                self.underlay.stop()
            if self.link is not None:
                self._say_offline()
                self.link.stop()
            if self._cache_timer.pending:
                self.save_cache()
            self._write_runtime(running=False)

    def boot(self) -> None:
        """Bring the device up from the cache (before any network I/O)."""
        if self.tracker.network_ids:
            log.info("applying cached state of %d network(s)", len(self.tracker.network_ids))
        self.apply()

    def step(self, timeout: float) -> None:
        """Handle one event (or none within ``timeout``), then the tasks that are due, in order."""
        try:
            ev = self.events.get(timeout=max(0.0, timeout))
        except queue.Empty:
            ev = None
        if ev is not None:
            self.handle(ev)
        self.timers.run_due(time.monotonic())

    def _next_timer(self) -> float:
        return self.timers.wait(time.monotonic(), most=1.0)

    @property
    def listening(self) -> bool:
        """Connected, and subscribed to every topic it wants (no retry pending)."""
        return (self.connected and not self._subscribe_timer.pending and bool(self._subs)
                and all(s.state == "subscribed" for s in self._subs.values()))

    # ---------------------------------------------------------------- events
    def handle(self, ev: object) -> None:
        if isinstance(ev, Connected):
            self.connected = True
            log.info("connected to MQTT; subscribing and resyncing")
            # A report on every connect, unchanged or not: the control plane may have marked this host
            # offline meanwhile (its last will, published when the broker lost the last connection).
            self._last_report = None
            self._status_timer.no_later_than(time.monotonic())
            self._subs = {}
            self._subscribe_timer.reset_backoff()
            self._sync_subscriptions()
            self.resync()
        elif isinstance(ev, Disconnected):
            if self.connected:
                log.warning("MQTT disconnected (%s); the tunnels stay as they are", ev.reason)
            self.connected = False
            self._subs = {}
            self._subscribe_timer.cancel()  # the next connect subscribes
            self._write_runtime()
        elif isinstance(ev, Received):
            self.on_message(ev.topic, ev.payload)
        elif isinstance(ev, ProbeChanged):
            self._follow_probes()
            self._check_latency()
            self._write_runtime()  # `status` shows each target's verdict (written only when one changed)
        elif isinstance(ev, GroupRoleChanged):
            self._apply_forwarding()
            if self.connected:  # the control plane records the active member from the report
                self._status_timer.no_later_than(time.monotonic())
        elif isinstance(ev, DirectChanged):
            if self.connected:  # the control plane ends (or keeps) the pair on this: report at once
                now = time.monotonic()
                self._status_timer.no_later_than(max(now, self._last_report_at + 1.0))
            self._write_runtime()

    def on_message(self, topic: str, payload: bytes) -> None:
        try:
            msg = protocol.decode(payload)
        except protocol.UnsupportedVersionError as e:
            if not e.newer:
                log.warning("ignored a message on %s: %s", topic, e)
                return
            self._newer_schema(topic, payload)
            return
        except protocol.ProtocolError as e:
            log.warning("ignored a message on %s: %s", topic, e)
            return
        if isinstance(msg, protocol.Command):
            if msg.name == "resync":
                self.resync()
            else:
                log.warning("unknown command %r ignored", msg.name)
        elif isinstance(msg, protocol.Delta):
            outcome = self.tracker.on_delta(msg)
            if outcome is Outcome.APPLIED:
                self.apply()
            elif outcome in (Outcome.GAP, Outcome.MEMBERSHIP):
                log.info("%s at seq %d of %s: full resync", outcome.value, msg.seq, msg.network_id)
                self.resync()

    def _newer_schema(self, topic: str, payload: bytes) -> None:
        """A broadcast of a schema newer than ours: say so (once per version), and learn what it
        changed over HTTPS instead, at most once per ``resync_max`` however many such arrive."""
        try:
            theirs = json.loads(payload).get("v")
        except (ValueError, AttributeError):
            theirs = None
        self.upgrade = (f"the control plane speaks schema {protocol.short(theirs)}, this agent "
                        f"{protocol.VERSION}: upgrade skymesh-agent")
        if theirs != self._newer_seen:
            self._newer_seen = theirs
            log.error("%s (a message on %s could not be read); resyncing over HTTPS meanwhile",
                      self.upgrade, topic)
        self.error = self.upgrade
        now = time.monotonic()
        when = max(now, self._newer_resync_at + self.t.resync_max)
        if not self._resync_timer.pending or (self._resync_timer.due or 0.0) > when:
            self._resync_timer.at(when)
            self._newer_resync_at = when
        self._write_runtime()

    # ---------------------------------------------------------------- resync
    def resync(self, full: bool = False) -> None:
        """Fetch what we missed over HTTPS and converge to it; retry with backoff on failure.

        We name the seq we have of each network, so after an outage in which nothing (or
        little) changed the API answers with the deltas missed, not every member again.
        ``full``: ask for full snapshots (after a catch-up that did not apply).
        """
        try:
            cfg = self.api.config(self.state.host_id, None if full else self.tracker.known())
        except (Unreachable, protocol.ProtocolError) as e:
            self._retry_resync(str(e))
            return
        except ApiError as e:
            if e.status in (401, 403, 404) and e.code:
                # The API's own answer (its error shape has a code), not an outage, nor a proxy's or
                # a gateway's page: this host was deleted.
                self._host_deleted(e)
                return
            self._retry_resync(e.message, slow=e.status < 500)
            return
        if not self.tracker.catch_up(cfg.snapshots, cfg.catch_ups):
            log.info("the catch-up did not apply; fetching full snapshots")
            self.resync(full=True)
            return
        self._resync_timer.succeeded()
        self.last_sync, self.error = time.time(), self.upgrade
        self.apply()
        if not self._subscribe_timer.pending:  # else the retry subscribes (with backoff), then resyncs
            self._sync_subscriptions()
        self._check_endpoints()

    def _host_deleted(self, e: ApiError) -> None:
        """Drop the deleted host's peers, keep no cache that would bring them back, say so once, stop."""
        self.deleted = (f"this host was deleted from the control plane ({e.message}, HTTP {e.status}); "
                        "stopping — run `skymesh-agent leave` to remove the interface, or join again")
        log.error("%s", self.deleted)
        self.tracker.replace([])
        self.apply()  # its peers, addresses and routes go; the device itself is `leave`'s to remove
        self.save_cache()
        self._resync_timer.cancel()
        self.error = self.deleted
        self.stop()

    def _retry_resync(self, why: str, slow: bool = False) -> None:
        delay = self._resync_timer.retry(time.monotonic(), self._rng, slow=slow)
        self.error = why
        log.warning("resync failed (%s); next try in about %.0fs", why, delay)
        self._write_runtime()

    def _retry_subscriptions(self) -> None:
        if self._sync_subscriptions():
            self.resync()  # what was published while we did not hear it

    def _sync_subscriptions(self) -> bool:
        """Hear exactly this host's inbox and its networks' broadcasts; schedule a retry of what failed.

        Returns whether a topic was newly subscribed. A failure (a timeout, an error, a
        refusal) is retried while connected, with jittered exponential backoff, until it
        succeeds or the connection drops (the next connect starts afresh).
        """
        if self.link is None or not self.connected:
            return False
        want = {protocol.host_inbox_topic(self.state.host_id)}
        want |= {protocol.network_topic(n) for n in self.tracker.network_ids}
        have = {t for t, s in self._subs.items() if s.state == "subscribed"}
        failed = False
        if gone := sorted(have - want):
            try:
                self.link.unsubscribe(gone)
            except Exception as e:  # noqa: BLE001 - a timeout or a dropped connection: retried
                log.warning("unsubscribe from %s failed: %s", ", ".join(gone), _why(e))
                failed = True
            else:
                for t in gone:
                    del self._subs[t]
        for t in [t for t, s in self._subs.items() if t not in want and s.state != "subscribed"]:
            del self._subs[t]
        added = False
        if new := sorted(want - have):
            try:
                refused = set(self.link.subscribe(new))
            except Exception as e:  # noqa: BLE001 - a timeout under load, or a dropped connection: retried
                log.warning("subscribe to %s failed: %s", ", ".join(new), _why(e))
                self._subs.update({t: SubState("failed", _why(e)) for t in new})
                failed = True
            else:
                for t in new:
                    self._subs[t] = SubState("refused", "refused by the broker") if t in refused else \
                        SubState("subscribed")
                if refused:
                    log.warning("the broker refused subscriptions to %s", ", ".join(sorted(refused)))
                    failed = True
                added = len(refused) < len(new)
        if failed:
            now = time.monotonic()
            self._subscribe_timer.retry(now, self._rng, wall_now=time.time())
            log.info("subscriptions: next try in about %.0fs", (self._subscribe_timer.due or now) - now)
        else:
            self._subscribe_timer.succeeded()
        self._write_runtime()
        return added

    def _check_endpoints(self) -> None:
        """Once per run: tell the API where this host is now, if it moved (discovered endpoints only)."""
        if self._endpoints_checked or self.state.endpoints or self._discover is None:
            return
        found = tuple(self._discover())
        if found and found != self.state.auto_endpoints:
            try:
                self.api.update_endpoints(self.state.host_id, list(found))
            except (ApiError, Unreachable) as e:
                log.warning("could not update endpoints: %s", e)
                return
            self.state = replace(self.state, auto_endpoints=found)
            self.dir.save(self.state)
        self._endpoints_checked = True

    # ----------------------------------------------------------------- apply
    def apply(self) -> None:
        """Make the device match the tracked networks, peer by peer.

        After a delta only the peers it touched are computed and sent (O(change));
        at boot, after a resync or a failure, and at every heartbeat the whole
        device is read back and reconciled (O(network)).
        """
        changes = self.tracker.take_changes()
        before = set(self._applied)
        try:
            if changes.full or self._needs_full:
                self._needs_full = True  # until it succeeds
                self._apply_full()
            elif changes.keys:
                self._apply_keys(changes.keys)
        except (BackendError, NetConfError, OSError, AllowedIpConflictError) as e:
            self.error = f"cannot configure {self.state.interface}: {e}"
            log.error("%s; retrying in %.0fs", self.error, self.t.apply_retry)
            self._needs_full = True
            self._apply_timer.at(time.monotonic() + self.t.apply_retry)
            self._write_runtime()
            return
        self._needs_full = False
        self._apply_timer.cancel()
        if self.error and self.error.startswith("cannot configure"):
            self.error = self.upgrade
        seqs = {n: self.tracker.seq(n) for n in self.tracker.network_ids}
        if seqs != self._cached_seqs and not self._cache_timer.pending:
            self._cache_timer.at(time.monotonic() + self.t.cache_delay)  # coalesce a burst into one write
        if set(self._applied) != before:
            self._status_timer.no_later_than(time.monotonic() + 1.0)  # peers came or went
        if set(self._applied) - before and self.prober is not None:
            # a host starts sending to peers it just got: find those it cannot reach within a second
            self._attempts.peers_added(time.monotonic())
            self._watch_timer.no_later_than(time.monotonic() + self._attempts.settings.watch)
        self._probe_targets()
        self._sync_groups()
        self._write_runtime()
        if self._on_applied is not None:
            self._on_applied(self.tracker)

    def _apply_full(self) -> None:
        desired = self.tracker.device(self.state.listen_port)
        created = self.backend.ensure_device(self._wg_key, self.state.listen_port)
        if self.netsetup is not None:
            self.netsetup.apply(desired.addresses, desired.routes, desired.mtu)
        diff = peer_diff(self.backend.peers(), desired.peers, None if created else self._applied)
        if diff:
            self.backend.apply_peers(diff.upsert, diff.remove)
            log.info("applied %d peer change(s), %d removal(s)", len(diff.upsert), len(diff.remove))
        self._applied = dict(desired.peers)
        self._desired = desired
        self._apply_roles(desired)
        self._reconciled_at = time.monotonic()

    def _apply_roles(self, desired: DeviceConfig) -> None:
        """Full tunnel and gateway forwarding as the plan says (after the peers: a failure here
        leaves the mesh itself working, and is retried like any other).

        Full tunnel the way wg-quick does it: the device marks its own packets before the
        rules send everything unmarked into the tunnel, and keeps the mark until they are gone.
        """
        if self.routing is not None:
            if desired.full_tunnel:
                self.backend.set_fwmark(self.routing.table)
                self._mark_checked = False
                if self.routing.apply(True, self._control_plane_addresses()):
                    log.info("full tunnel on: all traffic through %s (table %d)", self.state.interface,
                             self.routing.table)
            else:
                removed = self.routing.apply(False)
                if removed:
                    log.info("full tunnel off: the host's routing is as before")
                # read the device only when it may still carry our mark (not at every heartbeat)
                if (removed or not self._mark_checked) and self.backend.fwmark() == self.routing.table:
                    self.backend.set_fwmark(0)
                self._mark_checked = True
        self._apply_forwarding(desired)

    def _apply_forwarding(self, desired: DeviceConfig | None = None) -> None:
        """Our nftables table for ``desired`` (default: the last device applied in full), with the group
        interfaces this host serves (``forwarded_interfaces``). A failure of a later call (a role
        change) is logged and the full apply retried."""
        if desired is None:
            if self._desired is None:
                return
            try:
                self._apply_forwarding(self._desired)
            except NetConfError as e:
                log.error("cannot update the forwarding for the gateway groups: %s", e)
                self._needs_full = True
                self._apply_timer.at(time.monotonic() + self.t.apply_retry)
            return
        mark = self.routing.table if self.routing is not None and desired.full_tunnel else 0
        more: dict[str, tuple[str, ...]] = {}
        if self.groups is not None:
            more["groups"] = self._forwarded_groups = self.groups.forwarded_interfaces()
        if self.forwarding is not None and self.forwarding.apply(
                desired.forwards, desired.nat, full_tunnel_mark=mark, addresses=desired.addresses, **more):
            if more.get("groups"):
                log.info("gateway groups: forwarding for %s", ", ".join(more["groups"]))
            if mark and not (desired.forwards or desired.nat):
                log.info("full tunnel: the tunnel's own flows keep their mark (nftables)")
            elif desired.forwards or desired.nat:
                log.info("gateway: forwarding %s; masquerading for %s", ", ".join(desired.forwards),
                         ", ".join(desired.nat) or "nothing")
            else:
                log.info("no longer a gateway nor in full tunnel: our nftables table removed")

    def _control_plane_addresses(self) -> tuple[str, ...]:
        """The addresses of the API and the broker, which full tunnel keeps on the main table: so
        the host hears the control plane even when its internet gateway fails. Resolved at each
        full apply; when a name does not resolve (DNS through a dead tunnel), the last addresses
        known for it are kept."""
        out: set[str] = set()
        for host in (urllib.parse.urlsplit(self.state.server).hostname, self.state.mqtt_endpoint):
            if not host:
                continue
            try:
                found = {str(ipaddress.ip_address(host))}
            except ValueError:
                try:
                    found = {str(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
                             for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
                except (OSError, UnicodeError) as e:
                    log.warning("cannot resolve %s (%s); keeping it on the main table by the addresses "
                                "it had", host, e)
                    found = self._bypass.get(host, set())
            self._bypass[host] = found
            out |= {a for a in found if not ipaddress.ip_address(a).is_loopback}
        return tuple(sorted(out))

    def _apply_keys(self, keys: set[str]) -> None:
        upsert, remove = [], []
        for key in sorted(keys):
            want = self.tracker.peer(key)
            if want == self._applied.get(key):
                continue
            if want is None:
                remove.append(key)
            else:
                upsert.append(want)
        if not upsert and not remove:
            return
        self.backend.apply_peers(upsert, [k for k in remove if k in self._applied])
        log.info("applied %d peer change(s), %d removal(s)", len(upsert), len(remove))
        for p in upsert:
            self._applied[p.public_key] = p
        for key in remove:
            self._applied.pop(key, None)

    def save_cache(self) -> None:
        """Write what was applied, so the next boot starts from it."""
        self._cache_timer.cancel()
        try:
            self.dir.save_cache(self.tracker.snapshots)
        except OSError as e:
            log.warning("cannot write the cache: %s", e)
            return
        self._cached_seqs = {n: self.tracker.seq(n) for n in self.tracker.network_ids}

    # ---------------------------------------------------------------- status
    def status_report(self) -> protocol.StatusReport:
        now = time.time()
        stats = self.backend.stats() if self.backend.exists() else {}
        # Only peers this host has talked to: in a large mesh most pairs never do, and a
        # peer without handshake or bytes says nothing the API does not know already.
        stats = {k: s for k, s in stats.items() if s.latest_handshake or s.rx_bytes or s.tx_bytes}
        # The control plane refuses a report of more peers than that (any host can send
        # one, and its record has a fixed size): a gateway reports its most recent handshakes.
        recent = sorted(stats, key=lambda k: (-(stats[k].latest_handshake or 0), k))
        kept = sorted(recent[:protocol.MAX_REPORT_PEERS])
        peers = tuple(PeerStatus(
            public_key=k,
            latest_handshake_age=(None if (at := stats[k].latest_handshake) is None
                                  else min(protocol.MAX_HANDSHAKE_AGE, max(0, int(now - at)))),
            rx_bytes=stats[k].rx_bytes, tx_bytes=stats[k].tx_bytes,
            endpoint=_reportable(stats[k].endpoint)) for k in kept)
        self._probe_targets(stats)
        return protocol.StatusReport(agent_version=__version__,
                                     endpoints=self.state.endpoints or self.state.auto_endpoints,
                                     peers=peers, latency=self.prober.rows() if self.prober else (),
                                     direct=self._direct(),
                                     groups=self.groups.reports() if self.groups is not None else ())

    def report_status(self) -> None:
        """Check the device is there (bring it back if not); report if something changed.

        A report lists the peers this host has talked to; it goes out when such a
        peer's handshake appears or goes stale, the endpoints change, or the
        heartbeat is due.
        """
        self._status_timer.at(time.monotonic() + self.t.status_check)
        reconcile_due = time.monotonic() - self._reconciled_at >= self.t.heartbeat
        if not self._apply_timer.pending and not self.backend.exists():
            log.warning("%s is gone (wireguard-go died, or someone deleted it): bringing it back",
                        self.state.interface)
            self._needs_full = True
            self.apply()
        elif reconcile_due and not self._apply_timer.pending:
            self._needs_full = True  # read the whole device back: undo changes made behind our back
            self.apply()
        if self.link is None or not self.connected:
            return
        try:
            report = self.status_report()
        except (BackendError, OSError) as e:
            log.warning("cannot read the device: %s", e)
            return
        digest = (report.endpoints, tuple(
            (p.public_key, p.latest_handshake_age is not None and p.latest_handshake_age < HANDSHAKE_FRESH,
             p.endpoint)  # a client that moved (a phone from Wi-Fi to mobile data) is worth a report
            for p in report.peers), report.direct,  # a relayed pair's direct path: the pair may end
            report.groups)  # a group's role or epoch: the control plane records the active member
        now = time.monotonic()
        if (digest == self._last_report and now - self._last_report_at < self.t.heartbeat
                and not worth_reporting_now(self._reported_latency, report.latency, self._ranked)):
            return
        topic = self.state.status_topic or protocol.host_status_topic(self.state.host_id)
        if report.latency or report.direct:
            # The failover functions hear reports with latency on the broker topic: AWS IoT Basic
            # Ingest (the API's status_topic there) reaches only the one rule it names.
            topic = protocol.host_status_topic(self.state.host_id)
        self.link.publish(topic, protocol.encode(report))
        self._last_report, self._last_report_at = digest, now
        self._reported_latency = report.latency

    def _say_offline(self) -> None:
        """The last word of a clean stop: an offline report, so the control plane shows this host
        offline at once (the link's stop waits briefly for its ack). Not connected: the broker
        publishes the same report as this connection's will when it notices."""
        if self.link is not None and self.connected:
            self.link.publish(*offline_message(self.state.host_id))

    # ---------------------------------------------------------------- probes
    def _probe_targets(self, stats: dict[str, DevicePeer] | None = None) -> None:
        """Tell the prober what to probe: the gateways of this host's networks, and (given a read of
        the device's peers) the members it tries to reach without a session (:mod:`agent.reach`):
        fast, and not down before WireGuard had its fair chance, while undecided; slowly after.
        Tell the underlay echo the peers of this host's relayed pairs."""
        self._echo_peers()
        if self.prober is None:
            return
        now = time.monotonic()
        if stats is not None:
            self._attempts.observe(stats, time.time(), now)
        gateways = self.tracker.gateways()
        no_direct, trying = [], {}
        for key in self._attempts.trying():
            if (m := self.tracker.member_by_key(key)) is not None:
                no_direct.append(m)
                trying[m.host_id] = (FAST if self._attempts.undecided(key, now) else SLOW,
                                     self._attempts.hold_until(key))
        targets = choose_targets(gateways, no_direct, self.prober.settings.max_targets, trying)
        self._ranked = {m.host_id for m, _ in gateways}
        self.prober.set_targets(targets)

    def _watch_device(self) -> None:
        """Read the device for peers tried without a session: about once a second while one is
        undecided or peers were just added, else at the status check (:mod:`agent.reach`)."""
        now = time.monotonic()
        self._watch_timer.at(now + self.t.status_check)
        if self.prober is None or self._apply_timer.pending:
            return
        try:
            stats = self.backend.stats() if self.backend.exists() else None
        except (BackendError, OSError) as e:
            log.debug("cannot read the device: %s", e)
            return
        if stats is not None:
            self._probe_targets(stats)
        self._watch_timer.at(now + self._attempts.next_read(now, self.t.status_check))

    def _echo_peers(self) -> None:
        """The peers of this host's relayed pairs (every network), for the underlay echo: both ends
        probe each other at their endpoints' ports + the echo offset."""
        paired: dict[str, tuple[HostId, HostId]] = {}
        addresses: dict[str, tuple[tuple[str, int], ...]] = {}
        for net_id in self.tracker.network_ids:
            records = self.tracker.records(net_id)
            for other, via in records.paired(self.tracker.host_id).items():
                m = records.members[other]
                paired[m.public_key] = (other, via)
                if self.underlay is not None:
                    found = echo_addresses(m.endpoints, self.underlay.settings.port_offset)
                    addresses[m.public_key] = tuple(dict.fromkeys((*addresses.get(m.public_key, ()), *found)))
        self._paired = paired
        if self.underlay is not None:
            self.underlay.set_peers(addresses)

    def _direct(self) -> tuple[HostId, ...]:
        """The report's ``direct``: the relayed peers whose underlay path answers (autorelay rule 4)."""
        if self.underlay is None:
            return ()
        found = self.underlay.direct()
        out = sorted(h for k, (h, _) in self._paired.items() if k in found)
        return tuple(out[:protocol.MAX_REPORT_LATENCY])

    def _follow_probes(self) -> None:
        """The fast path of HA failover: a range several gateways serve moves off the ones the
        probes found dead to the next candidate the plan ranked for this host (one peer update,
        no round trip to the control plane, so it works while the control plane is down), and
        back when they answer again. The report the change triggers tells the control plane."""
        if self.prober is None:
            return
        down = {h for h, st in self.prober.states().items() if st.up is False}
        if down == self.tracker.down:
            return
        log.info("probes: %s down%s", ", ".join(sorted(down)) or "nothing",
                 f" (was {', '.join(sorted(self.tracker.down))})" if self.tracker.down else "")
        self.tracker.set_down(down)
        self.apply()

    def _check_latency(self) -> None:
        """Report at once (at most one extra report a second) when the probes say something worth it."""
        if self.prober is None:
            return
        now = time.monotonic()
        self._latency_timer.at(now + self.prober.settings.fast)
        if self.connected and worth_reporting_now(self._reported_latency, self.prober.rows(), self._ranked):
            self._status_timer.no_later_than(max(now, self._last_report_at + 1.0))

    # ---------------------------------------------------------------- groups
    def _sync_groups(self) -> None:
        """Converge this host's gateway groups on the tracker (:mod:`agent.groups`); retry when due."""
        if self.groups is None:
            return
        self._groups_timer.cancel()
        self.groups.sync(self.tracker)
        if (due := self.groups.next_due()) is not None:
            self._groups_timer.at(due)
        if self.groups.forwarded_interfaces() != self._forwarded_groups:
            self._apply_forwarding()

    def _members_up(self) -> list[str]:
        """The hosts the prober sees up now (the election's ``up``; called from its thread)."""
        if self.prober is None:
            return []
        return [h for h, st in self.prober.states().items() if st.up]

    def _write_runtime(self, running: bool = True) -> None:
        """Tell ``status`` what the agent is doing; written only when that changed (not per delta)."""
        direct = set(self._direct())
        info = {"pid": os.getpid(), "running": running, "connected": self.connected and running,
                "last_sync": self.last_sync, "error": self.error,
                "stopped": "host_deleted" if self.deleted else None,
                "subscriptions": ({t: {"state": s.state, "error": s.error}
                                   for t, s in sorted(self._subs.items())} if running else {}),
                "subscriptions_retry_at": self._subscribe_timer.wall if running else None,
                # what the probes say of each target now (only up/down: written when that changes)
                "probes": ({h: "unknown" if st.up is None else "up" if st.up else "down"
                            for h, st in sorted(self.prober.states().items())}
                           if running and self.prober is not None else {}),
                # each relayed peer: whether its direct path over the underlay answers (rule 4)
                "direct": ({h: h in direct for h, _ in sorted(self._paired.values())}
                           if running and self.underlay is not None else {})}
        if info == self._runtime_written:
            return
        try:
            self.dir.save_runtime(info)
        except OSError as e:
            log.warning("cannot write runtime state: %s", e)
            return
        self._runtime_written = info


def _reportable(endpoint: str | None) -> str | None:
    """A peer's current endpoint as the status report may carry it (the control plane shows
    where connected clients are); None for one the protocol would refuse (an IPv6 link-local
    with a zone, say), which would otherwise cost the whole report."""
    if endpoint is None:
        return None
    try:  # WireGuard reports addresses (at most 53 characters), never names: within the length bound
        (out,) = validate.endpoints([endpoint])
    except InvalidInputError:
        return None
    return out


def _why(e: BaseException) -> str:
    """An exception as a person reads it (a future's timeout has no message of its own)."""
    return str(e) or type(e).__name__
