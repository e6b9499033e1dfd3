"""The underlay echo (issue 10, automatic relays, rule 4) on real UDP sockets, on loopback: two ends
of a relayed pair find their direct path answering, lose it at once when one end stops, and a
host that is not a peer of a relayed pair gets nothing back. Short settings keep it quick; the
pure verdict with the real ones is pinned in tests/unit/test_underlay.py."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator

import pytest

from agent import keys
from agent.underlay import REQUEST, SIZE, DirectSettings, Echo, Underlay, pack, pair_key
from skymesh.lab.wait import wait_until

QUICK = DirectSettings(interval=0.2, timeout=0.15, answers=3, hold=0.5)


def free_port_pair() -> int:
    """A WireGuard port whose echo port (the next one) is free on loopback now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1]) - 1


@pytest.fixture
def pair() -> Iterator[tuple[Underlay, Underlay, str, str, int]]:
    ka, kb = keys.new_wireguard_key(), keys.new_wireguard_key()
    pa, pb = keys.wireguard_public_key(ka), keys.wireguard_public_key(kb)
    port_a, port_b = free_port_pair(), free_port_pair()
    a = Underlay(ka, pa, port_a, QUICK)
    b = Underlay(kb, pb, port_b, QUICK)
    a.start()
    b.start()
    try:
        a.set_peers({pb: (("127.0.0.1", port_b + 1),)})
        b.set_peers({pa: (("127.0.0.1", port_a + 1),)})
        yield a, b, pa, pb, port_a
    finally:
        a.stop()
        b.stop()


def test_both_ends_find_the_direct_path_and_lose_it_at_the_first_unanswered_round(pair) -> None:
    a, b, pa, pb, _ = pair
    t0 = time.monotonic()
    wait_until(lambda: a.direct() == {pb} and b.direct() == {pa}, 5.0, "both ends direct")
    assert time.monotonic() - t0 >= QUICK.hold  # not before the hold, however fast the answers
    b.stop()
    wait_until(lambda: a.direct() == frozenset(), 2.0, "A drops the verdict once B stops answering")


def test_a_host_that_is_no_relayed_peer_gets_no_answer(pair) -> None:
    a, b, pa, pb, port_a = pair
    wait_until(lambda: a.direct() == {pb} and b.direct() == {pa}, 5.0, "A answers its relayed peer")
    stranger = keys.new_wireguard_key()
    ps = keys.wireguard_public_key(stranger)
    # well formed, with the right MAC key for the pair (stranger, A): a host that could derive it
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.05)
        for seq in range(1, 11):
            request = pack(Echo(REQUEST, base64.b64decode(ps), base64.b64decode(pa), seq,
                                int(time.time() * 1000)), pair_key(stranger, pa))
            s.sendto(request, ("127.0.0.1", port_a + 1))
            with pytest.raises(TimeoutError):
                s.recvfrom(SIZE + 1)
    assert a.direct() == {pb}  # and A went on answering B all along
