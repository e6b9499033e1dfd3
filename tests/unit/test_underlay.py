"""The underlay echo's pure parts (issue 10, automatic relays, rule 4: ``direct``): the message and
its authentication, who gets an answer, and the verdict with its hysteresis and flap backoff.
Time is passed in; the socket thread runs in tests/functional/test_underlay.py and end to end in
tests/e2e/test_autorelay.py."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from agent import keys
from agent.underlay import (
    REPLY,
    REQUEST,
    SIZE,
    DirectSettings,
    Echo,
    Echoes,
    Responder,
    Streak,
    echo_addresses,
    pack,
    pair_key,
    parse,
)

A, B, C = (keys.new_wireguard_key() for _ in range(3))
PA, PB, PC = (keys.wireguard_public_key(k) for k in (A, B, C))
RAW = {k: base64.b64decode(k) for k in (PA, PB, PC)}
NOW_MS = 1_800_000_000_000


def request(seq: int, frm: str = A, to: str = PB, time_ms: int = NOW_MS, kind: int = REQUEST) -> bytes:
    me = keys.wireguard_public_key(frm)
    return pack(Echo(kind, RAW[me], RAW[to], seq, time_ms), pair_key(frm, to))


def responder(private: str = B, peers: tuple[str, ...] = (PA,)) -> Responder:
    r = Responder(private, keys.wireguard_public_key(private))
    r.set_peers(peers)
    return r


def test_both_ends_derive_the_same_key_and_a_third_host_another() -> None:
    assert pair_key(A, PB) == pair_key(B, PA)
    assert pair_key(A, PC) != pair_key(A, PB) and pair_key(C, PB) != pair_key(A, PB)


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.sampled_from((REQUEST, REPLY)))
def test_a_message_is_constant_size_and_reads_back(seq: int, time_ms: int, kind: int) -> None:
    data = pack(Echo(kind, RAW[PA], RAW[PB], seq, time_ms), b"k" * 32)
    assert len(data) == SIZE and parse(data) == Echo(kind, RAW[PA], RAW[PB], seq, time_ms)


def test_a_peer_of_a_relayed_pair_gets_one_reply_of_the_same_size_bound_to_its_request() -> None:
    data = request(7)
    reply = responder().answer(data, NOW_MS + 500)
    assert reply is not None and len(reply) == len(data)  # no amplification
    a = responder(A, (PB,))
    assert a.reply_of(reply) == (PB, 7)  # A reads it as B's answer to its request 7


@given(st.integers(0, SIZE - 1), st.integers(1, 255))
def test_a_request_changed_in_any_byte_gets_no_answer(at: int, flip: int) -> None:
    data = bytearray(request(7))
    data[at] ^= flip
    assert responder().answer(bytes(data), NOW_MS) is None


def test_strangers_replays_reflections_and_old_requests_get_no_answer() -> None:
    r = responder()
    assert responder(peers=()).answer(request(1), NOW_MS) is None  # A is no relayed peer of B's
    assert responder().answer(request(1, frm=C), NOW_MS) is None  # C: not a peer (valid MAC or not)
    assert responder().answer(request(1, to=PC), NOW_MS) is None  # meant for someone else
    assert r.answer(request(1), NOW_MS) is not None
    assert r.answer(request(1), NOW_MS) is None  # the same request again: a replay
    assert r.answer(request(2, time_ms=NOW_MS - 121_000), NOW_MS) is None  # out of the clock window
    reply = r.answer(request(3), NOW_MS)
    assert reply is not None and responder(A, (PB,)).answer(reply, NOW_MS) is None  # a reply is no request
    assert r.reply_of(request(4)) is None  # nor a request a reply
    assert r.answer(b"x" * SIZE, NOW_MS) is None and r.answer(request(5)[:-1], NOW_MS) is None


def test_replays_older_than_the_window_get_no_answer() -> None:
    r = responder()
    for seq in range(1000, 1000 + Responder.WINDOW):
        assert r.answer(request(seq), NOW_MS) is not None
    assert r.answer(request(999), NOW_MS) is None  # below every seq remembered


def test_echo_addresses_are_the_endpoints_at_the_next_port_without_names() -> None:
    assert echo_addresses(("198.18.0.1:51820", "[fd00::1]:51820", "gw.example.com:51820",
                           "198.18.0.1:51820"), 1) == (("198.18.0.1", 51821), ("fd00::1", 51821))


S = DirectSettings(interval=2.0, timeout=1.0, answers=5, hold=30.0, flap_window=600.0)
ADDR = ("198.18.0.2", 51821)


def run(e: Echoes, answered: list[bool], start: float = 0.0, key: str = PB) -> list[tuple[float, bool]]:
    """One round every 2 s from ``start``, answered (after 10 ms) or not; the changes, with when."""
    out = []
    for i, ok in enumerate(answered):
        now = start + i * S.interval
        for seq, k, addr in e.due(now):
            if ok and k == key and (c := e.reply(seq, k, addr, now + 0.01)) is not None:
                out.append((now + 0.01, c[1]))
        out += [(now + S.timeout, c[1]) for c in e.expire(now + S.timeout)]
    return out


def test_direct_holds_after_five_answers_in_a_row_over_thirty_seconds_and_drops_at_the_first_miss() -> None:
    e = Echoes(S)
    e.set_peers({PB: (ADDR,)}, 0.0)
    changes = run(e, [True] * 20 + [False] + [True] * 3)
    # answered from 0 s: five answers by 8 s, but 30 s only at the round sent at 30 s
    assert changes == [(30.01, True), (41.0, False)]
    assert e.direct() == frozenset()


def test_a_reply_counts_only_from_the_address_asked_and_in_time() -> None:
    e = Echoes(S)
    e.set_peers({PB: (ADDR,)}, 0.0)
    (seq, _, _), = e.due(0.0)
    assert e.reply(seq, PB, ("198.18.0.66", 51821), 0.1) is None  # from elsewhere: ignored
    assert e.reply(seq, PC, ADDR, 0.1) is None  # another peer's key
    assert e.reply(seq, PB, ADDR, 1.5) is None  # too late
    assert e.expire(1.5) == []  # a miss, with no verdict to drop
    e2 = Echoes(S)
    e2.set_peers({PB: (ADDR,)}, 0.0)
    (seq, _, _), = e2.due(0.0)
    e2.reply(seq, PB, ADDR, 0.1)
    e2.expire(1.5)
    assert e2._peers[PB].streak.run == 1 and e._peers[PB].streak.run == 0  # noqa: SLF001


def test_a_round_to_several_addresses_is_answered_by_any_and_a_learned_source_is_probed_too() -> None:
    e = Echoes(S)
    e.set_peers({PB: (ADDR, ("fd00::2", 51821))}, 0.0)
    e.learned(PB, ("198.18.9.9", 40001))  # B's request came through its NAT from there
    sent = e.due(0.0)
    assert [a for _, _, a in sent] == [("198.18.9.9", 40001), ADDR, ("fd00::2", 51821)]
    assert e.reply(sent[2][0], PB, ("fd00::2", 51821), 0.05) is None  # answered, no verdict yet
    assert e.reply(sent[0][0], PB, ("198.18.9.9", 40001), 0.06) is None  # the round already counted
    assert e._peers[PB].streak.run == 1  # noqa: SLF001


def test_a_pair_ended_on_our_word_and_relayed_again_doubles_the_time_it_must_answer() -> None:
    e = Echoes(S)
    e.set_peers({PB: (ADDR,)}, 0.0)
    run(e, [True] * 16)
    assert e.direct() == {PB}
    e.set_peers({}, 40.0)  # the control plane ended the pair
    e.set_peers({PB: (ADDR,)}, 45.0)  # … and relayed it again: a flap
    assert e.required(PB) == 60.0
    changes = run(e, [True] * 32, start=46.0)
    assert changes == [(46.0 + 60.0 + 0.01, True)]
    e.set_peers({}, 200.0)
    e.set_peers({PB: (ADDR,)}, 900.0)  # relayed again long after: no flap, the backoff stays
    assert e.required(PB) == 60.0


def test_a_pair_ended_while_not_direct_is_no_flap() -> None:
    e = Echoes(S)
    e.set_peers({PB: (ADDR,)}, 0.0)
    e.set_peers({}, 10.0)  # its via went, say; nothing to do with our verdict
    e.set_peers({PB: (ADDR,)}, 11.0)
    assert e.required(PB) == 30.0


@given(st.lists(st.booleans(), max_size=60))
def test_the_verdict_is_the_simple_model_of_the_last_unbroken_run(outcomes: list[bool]) -> None:
    """Direct exactly when the rounds since the last miss are at least 5 and span at least 30 s."""
    s = Streak(S)
    for i, ok in enumerate(outcomes):
        now = i * S.interval
        if ok:
            s.answered(now, S.hold)
        else:
            s.missed()
        last_miss = max((j for j, o in enumerate(outcomes[:i + 1]) if not o), default=-1)
        run_len = i - last_miss
        model = run_len >= S.answers and (run_len - 1) * S.interval >= S.hold
        assert s.direct == model


@given(st.lists(st.tuples(st.booleans(), st.sampled_from(("ok", "late", "elsewhere"))), max_size=50))
def test_echoes_say_direct_exactly_as_the_model_whatever_the_replies(script: list[tuple[bool, str]]) -> None:
    """Rounds every 2 s, each answered in time from the address asked, late, or from elsewhere (or
    not at all): the verdict is the model's over the rounds answered in time, and a change is said
    exactly when the verdict flips."""
    e = Echoes(S)
    e.set_peers({PB: (ADDR,)}, 0.0)
    outcomes: list[bool] = []
    direct = False
    for i, (replied, how) in enumerate(script):
        now = i * S.interval
        said = []
        for seq, k, addr in e.due(now):
            if replied and how == "ok":
                said.append(e.reply(seq, k, addr, now + 0.5))
            elif replied and how == "elsewhere":
                said.append(e.reply(seq, k, ("198.18.0.66", addr[1]), now + 0.5))
            elif replied:
                e.expire(now + S.timeout)
                said.append(e.reply(seq, k, addr, now + S.timeout + 0.1))
        said += e.expire(now + S.timeout)
        outcomes.append(replied and how == "ok")
        run_len = len(outcomes) - 1 - max((j for j, o in enumerate(outcomes) if not o), default=-1)
        model = run_len >= S.answers and (run_len - 1) * S.interval >= S.hold
        assert (PB in e.direct()) == model
        assert [c for c in said if c is not None] == ([(PB, model)] if model != direct else [])
        direct = model
