"""A gateway group's election on real UDP sockets on loopback, in real time (agent/election_loop.py
through skymesh/lab/election.py): three members elect exactly one active member, a crash of the
active one moves it to another (20 kills, the takeover time printed), the new active member already
knows the clients' endpoints; two members with the control plane as the third voter (a stand-in for
its ``claims`` endpoint over real HTTP, through :meth:`agent.api.ApiClient.claim_gateway_group`):
the survivor takes over only once the control plane acks it. Every wait is bounded by a condition.
"""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent import keys
from agent.api import ApiClient, ApiError
from agent.election_loop import control_plane_vote, encode, mac_key
from chalicelib.domain import election
from chalicelib.domain.election import Claim, Promise, Timing
from chalicelib.domain.protocol import ProtocolError
from skymesh.lab.election import CLIENT_ENDPOINTS, GROUP, NETWORK, LoopbackGroup, overlaps
from skymesh.lab.wait import wait_until

TOKEN = "skm_ht_host_test_secret"
PATH = f"/v1/networks/{NETWORK}/gateway-groups/{GROUP}/claims"


class ControlPlaneVoter:
    """The ``claims`` endpoint as the contract says: ``election.vote`` on its stored promise with its
    own clock, one vote at a time; ``down`` answers 503 (a control plane that cannot be reached or
    is failing) and ``shape`` lets a test break the answer."""

    def __init__(self) -> None:
        self.promise: Promise | None = None
        self.down = False
        self.shape: dict[str, object] | None = None
        self.votes: list[tuple[float, str, int, bool]] = []  # (time, member, epoch, granted)
        self.refused_while_down: list[str] = []
        self._lock = threading.Lock()
        voter = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != PATH or self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._answer(403, {"error": {"code": "forbidden", "message": "not a member"}})
                if voter.down:
                    voter.refused_while_down.append(body["member"])
                    return self._answer(503, {"error": {"code": "unavailable", "message": "down"}})
                if voter.shape is not None:
                    return self._answer(200, voter.shape)
                with voter._lock:
                    claim = Claim(body["member"], body["epoch"], 0.0, body["incarnation"])
                    new = election.vote(voter.promise, claim, time.monotonic(), Timing())
                    if new is not None:
                        voter.promise = new
                    promised = voter.promise.epoch if voter.promise is not None else claim.epoch
                    voter.votes.append((time.monotonic(), claim.member, claim.epoch, new is not None))
                self._answer(200, {"granted": new is not None, "epoch": promised})

            def _answer(self, status: int, body: dict[str, object]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def voter() -> Iterator[ControlPlaneVoter]:
    v = ControlPlaneVoter()
    try:
        yield v
    finally:
        v.close()


@pytest.mark.slow  # 20 kills, each waiting for the restarted member's quiet time: about a minute
def test_three_members_one_active_and_each_crash_moves_it_within_the_bound(capsys) -> None:
    with LoopbackGroup(3) as group:
        group.start_all()
        assert wait_until(lambda: group.active() == ["m0"], 10.0, "the first member by priority active")
        times = group.takeovers(20)
        timeline = list(group.timeline)
        known = list(group.known_at_takeover)
        wait_until(lambda: len(group.active()) == 1, 10.0, "one active member after the last restart")
    p50, p99 = statistics.median(times), sorted(times)[-1]  # 20 samples: the 99th percentile is the max
    with capsys.disabled():
        print(f"\nelection takeover over {len(times)} kills: p50 {p50 * 1000:.0f} ms, "
              f"max {p99 * 1000:.0f} ms")
    assert overlaps(timeline) == []  # never two members active at once
    # the liveness bound of chalicelib/domain/election.py (≈ promise + stagger + round trips), with
    # room for a loaded machine; the goal (5 s for the whole failover) needs it well inside
    assert p99 < 3.0, times
    # every member that took over after a crash already knew the clients' endpoints
    assert known[0] == 0 and all(k == len(CLIENT_ENDPOINTS) for k in known[1:]), known


def test_two_members_the_survivor_takes_over_only_with_the_control_planes_ack(voter) -> None:
    api = ApiClient(voter.url, TOKEN)
    with LoopbackGroup(2, vote=control_plane_vote(api.claim_gateway_group)) as group:
        group.start_all()
        wait_until(lambda: group.active() == ["m0"], 10.0, "m0 active")
        assert voter.votes and voter.votes[0][1:] == ("m0", 1, True)  # its first claim was voted on
        wait_until(lambda: group.voting("m1"), 10.0, "m1 voting")
        voter.down = True
        at = group.kill("m0")
        # m1 campaigns (its first claim, then each renewal: it sees nobody up) and cannot reach the
        # control plane: one whole campaign and the first claim of the next go unanswered
        wait_until(lambda: voter.refused_while_down.count("m1") >= 5, 15.0, "m1 asking the control plane")
        assert group.became_active_after(at, "m0") is None and group.active() == []
        voter.down = False
        wait_until(lambda: group.active() == ["m1"], 10.0, "m1 active once the control plane acks it")
        took = group.became_active_after(at, "m0")
        assert took is not None
        granted = [t for t, m, _, ok in voter.votes if m == "m1" and ok]
        assert granted and granted[0] < took  # its lease rests on the control plane's ack
        assert overlaps(group.timeline) == []


def test_the_claims_call_reads_the_contracts_answer_and_refuses_anything_else(voter) -> None:
    api = ApiClient(voter.url, TOKEN)
    assert api.claim_gateway_group(NETWORK, GROUP, member="host_a", epoch=3, incarnation=7) == (True, 3)
    assert api.claim_gateway_group(NETWORK, GROUP, member="host_b", epoch=4, incarnation=1) == (False, 3)
    for bad in ({"granted": "yes", "epoch": 3}, {"granted": True, "epoch": True}, {"granted": True}, {}):
        voter.shape = bad
        with pytest.raises(ProtocolError):
            api.claim_gateway_group(NETWORK, GROUP, member="host_a", epoch=3, incarnation=7)
    voter.shape = None
    with pytest.raises(ApiError) as e:
        ApiClient(voter.url, "skm_ht_other").claim_gateway_group(NETWORK, GROUP, member="host_a", epoch=3,
                                                                  incarnation=7)
    assert e.value.status == 403


def test_a_running_member_drops_and_counts_foreign_datagrams_and_stays_active() -> None:
    with LoopbackGroup(3) as group:
        group.start_all()
        wait_until(lambda: group.active() == ["m0"], 10.0, "m0 active")
        loop = group.members["m0"].loop
        assert loop is not None
        other_key = keys.new_wireguard_key()
        claim = Claim("m1", 99, time.monotonic(), 1)
        junk = [
            b"\x00" * 40,  # malformed
            encode(claim, "grp_elsewhere1", 1, mac_key(other_key, NETWORK, "grp_elsewhere1", 1)),  # not ours
            encode(claim, GROUP, 2, mac_key(group.key, NETWORK, GROUP, 2)),  # the next key version
            encode(claim, GROUP, 1, mac_key(other_key, NETWORK, GROUP, 1)),  # a key that is not the group's
        ]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for data in junk:
                s.sendto(data, ("127.0.0.1", group.members["m0"].port))
        wanted = {"malformed": 1, "unknown_group": 1, "other_version": 1, "bad_mac": 1}
        wait_until(lambda: all(loop.counters().get(k, 0) >= n for k, n in wanted.items()), 5.0,
                   "every datagram counted", details=lambda: str(loop.counters()))
        assert group.active() == ["m0"] and [s.epoch for s in loop.status()] == [1]  # epoch 99 unheard
