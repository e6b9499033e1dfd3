"""The wire protocol between control plane and agents (chalicelib.domain.protocol)."""

from __future__ import annotations

import base64
import copy
import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain import protocol
from chalicelib.domain.ids import HostId, NetworkId, new_id
from chalicelib.domain.models import Member, Network, PeerStatus
from chalicelib.domain.protocol import Command, Delta, ProtocolError, Snapshot, StatusReport

# --- strategies -----------------------------------------------------------------------------

ids = st.text(min_size=1, max_size=24)
ints = st.integers(-(2**63), 2**63)
ports = st.integers(1, 65535)


def members(network_id: str) -> st.SearchStrategy[Member]:
    return st.builds(
        Member,
        network_id=st.just(NetworkId(network_id)),
        host_id=ids.map(HostId),
        name=st.text(max_size=20),
        public_key=st.text(max_size=44),
        ipv4=st.text(max_size=15),
        ipv6=st.text(max_size=39),
        listen_port=ports,
        endpoints=st.lists(st.text(max_size=30), max_size=4).map(tuple),
    )


def network_records(network_id: str | None = None) -> st.SearchStrategy[Network]:
    """A network as the wire carries it (``created_at`` is not on the wire, so it stays 0)."""
    return st.builds(
        Network,
        id=(st.just(network_id) if network_id is not None else ids).map(NetworkId),
        name=st.text(max_size=20), ipv4_cidr=st.text(max_size=18), ipv6_cidr=st.text(max_size=43),
        listen_port=ports, keepalive=ints, mtu=ints, seq=ints,
    )


@st.composite
def deltas(draw: st.DrawFn) -> Delta:
    net_id = draw(ids)
    return Delta(
        network_id=net_id,
        seq=draw(ints),
        upsert=tuple(draw(st.lists(members(net_id), max_size=4))),
        remove=tuple(draw(st.lists(ids, max_size=4))),
        network=draw(st.none() | network_records(net_id)),
    )


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    net = draw(network_records())
    return Snapshot(network=net, members=tuple(draw(st.lists(members(net.id), max_size=5))))


# Status reports come from any host, so only reports inside the schema's bounds are valid.
wg_keys = st.binary(min_size=32, max_size=32).filter(any).map(lambda b: base64.b64encode(b).decode())
agent_versions = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}", fullmatch=True)
report_endpoints = st.sampled_from(["198.18.0.5:51820", "[fd00::5]:51820", "gw.example.net:1",
                                    "203.0.113.7:65535", "a:2"])
status_reports = st.builds(
    StatusReport,
    agent_version=agent_versions,
    endpoints=st.lists(report_endpoints, max_size=5, unique=True).map(tuple),
    peers=st.lists(st.builds(PeerStatus, public_key=wg_keys,
                             latest_handshake_age=st.none() | st.integers(0, protocol.MAX_HANDSHAKE_AGE),
                             rx_bytes=st.integers(0, protocol.MAX_COUNTER),
                             tx_bytes=st.integers(0, protocol.MAX_COUNTER)),
                   max_size=5).map(tuple),
)

commands = st.builds(Command, name=st.text(max_size=20))
messages = st.one_of(deltas(), snapshots(), status_reports, commands)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (st.lists(children, max_size=4)
                      | st.dictionaries(st.text(max_size=10), children, max_size=4)),
    max_leaves=8,
)

# Values that break naive parsers: wrong types, empty containers, huge/negative/fractional numbers.
ODD_VALUES: list[Any] = [None, True, "", "x", [], {}, [{}], -1, 0, 2**64, 10**400, 1.5, float("nan"),
                         float("inf"), float("-inf"), "1e3"]


def _slots(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) of a decoded JSON value, nested ones included."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    out: list[tuple[Any, Any]] = []
    for key, child in items:
        out.append((value, key))
        out.extend(_slots(child))
    return out


@st.composite
def mutated_messages(draw: st.DrawFn) -> dict[str, Any]:
    """A valid message's JSON with one to three fields (top-level or nested) replaced or dropped."""
    d = json.loads(protocol.encode(draw(messages)))
    for _ in range(draw(st.integers(1, 3))):
        slots = [(c, k) for c, k in _slots(d) if k not in ("v", "type")]
        if not slots:
            break
        container, key = draw(st.sampled_from(slots))
        if isinstance(container, dict) and draw(st.booleans()):
            del container[key]
        else:
            odd = st.sampled_from(ODD_VALUES).map(copy.deepcopy)  # never share (or mutate) the originals
            container[key] = draw(odd if draw(st.integers(0, 3)) else json_values)
    return d


# --- round trips ----------------------------------------------------------------------------


@settings(max_examples=150)
@given(messages)
def test_every_message_type_survives_encode_decode(msg: protocol.Message) -> None:
    payload = protocol.encode(msg)
    assert isinstance(payload, bytes)
    assert protocol.decode(payload) == msg
    assert protocol.decode(payload.decode()) == msg
    assert protocol.decode(json.loads(payload)) == msg


@pytest.mark.parametrize("msg", [
    Delta(network_id="net_a", seq=3, remove=("host_b",)),
    Snapshot(network=Network(id=NetworkId("net_a"), name="lab", ipv4_cidr="100.64.0.0/16",
                             ipv6_cidr="fd00::/64", seq=4), members=()),
    StatusReport(agent_version="0.1.0"),
    Command(name="resync"),
], ids=["delta", "snapshot", "status", "command"])
def test_encoded_messages_carry_version_and_type(msg: protocol.Message) -> None:
    d = json.loads(protocol.encode(msg))
    assert d["v"] == protocol.VERSION == 5
    assert d["type"] == msg.type
    if isinstance(msg, Snapshot):
        assert d["full"] is True
        assert msg.seq == 4


def test_delta_members_belong_to_the_deltas_network() -> None:
    wire = {"v": 5, "type": "delta", "network": "net_a", "seq": 5, "upsert": [
        {"host": "host_b", "name": "b", "key": "k", "ipv4": "100.64.0.2", "ipv6": "fd00::2", "port": 51820}]}
    msg = protocol.decode(wire)
    assert isinstance(msg, Delta)
    assert msg.upsert[0].network_id == "net_a"
    assert msg.upsert[0].endpoints == ()
    assert msg.network is None


KEY = base64.b64encode(bytes(range(1, 33))).decode()


def report(**fields: Any) -> dict[str, Any]:
    return {"v": 1, "type": "status", "agent_version": "0.1.0", **fields}


def peer(**fields: Any) -> dict[str, Any]:
    return {"key": KEY, "handshake_age": 3, "rx": 10, "tx": 20, **fields}


def test_the_largest_valid_status_report_decodes_and_fits_the_byte_bound() -> None:
    keys = [base64.b64encode(i.to_bytes(32, "big")).decode() for i in range(1, protocol.MAX_REPORT_PEERS + 1)]
    wire = report(agent_version="v" * protocol.MAX_AGENT_VERSION,
                  endpoints=[f"[fd00::{i:x}:ffff:ffff:ffff:ffff]:65535" for i in range(8)],
                  peers=[peer(key=k, handshake_age=protocol.MAX_HANDSHAKE_AGE, rx=protocol.MAX_COUNTER,
                              tx=protocol.MAX_COUNTER) for k in keys])
    payload = json.dumps(wire).encode()
    assert len(payload) <= protocol.MAX_REPORT_BYTES
    msg = protocol.decode_status(payload)
    assert len(msg.peers) == protocol.MAX_REPORT_PEERS and len(msg.endpoints) == 8
    assert protocol.decode_status(wire) == msg


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("wire", [
    report(agent_version="x" * (protocol.MAX_AGENT_VERSION + 1)),
    report(agent_version=""),
    report(agent_version="1.0\n"),
    report(agent_version=7),
    report(agent_version=["1"]),
    report(endpoints=["198.18.0.5:51820"] * 9),
    report(endpoints=["x" * 300 + ":1"]),
    report(endpoints=["198.18.0.5"]),
    report(endpoints=[{"host": "198.18.0.5"}]),
    report(endpoints="198.18.0.5:51820"),
    report(peers=[peer()] * (protocol.MAX_REPORT_PEERS + 1)),
    report(peers=[peer(key="k")]),
    report(peers=[peer(key=KEY[:-1] + "A")]),  # non-canonical base64
    report(peers=[peer(key="A" * 43 + "=")]),  # all zeros
    report(peers=[peer(key=KEY * 1000)]),
    report(peers=[peer(rx=-1)]),
    report(peers=[peer(tx=protocol.MAX_COUNTER + 1)]),
    report(peers=[peer(rx=True)]),
    report(peers=[peer(handshake_age=1.5)]),
    report(peers=[peer(handshake_age=protocol.MAX_HANDSHAKE_AGE + 1)]),
    report(peers=[peer(extra=1)]),
    report(peers={"a": peer()}),
    report(host="host_b"),
    report(**{"k" * 100_000: 1}),
    report(agent_version=_nested(50_000)),
    report(peers=[peer(key=_nested(50))]),
    {"v": 1, "type": "command", "name": "resync"},
], ids=lambda w: next((k for k in w if k not in ("v", "type")), "type")[:20])
def test_status_reports_outside_the_bounds_are_refused(wire: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        protocol.decode_status(wire)
    try:
        payload = json.dumps(wire).encode()
    except RecursionError:
        return
    with pytest.raises(ProtocolError):
        protocol.decode_status(payload)


@pytest.mark.parametrize("payload", [
    b"[" * 100_000,
    b'{"v":1,"type":"status","agent_version":"1","x":' + b"[" * 20_000 + b"]" * 20_000 + b"}",
    b'{"v":1,"type":"status","agent_version":"1","x":' + b"[" * 900 + b"]" * 900 + b"}",
    b'{"v":1,"type":"status","agent_version":"' + b"1" * (protocol.MAX_REPORT_BYTES + 1) + b'"}',
])
def test_oversized_or_deep_payloads_are_refused_before_or_while_parsing(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        protocol.decode_status(payload)


def test_refusals_of_hostile_reports_are_short() -> None:
    with pytest.raises(ProtocolError) as e:
        protocol.decode_status(report(agent_version="x" * 100_000))
    assert len(str(e.value)) < 200
    with pytest.raises(ProtocolError) as e:
        protocol.decode_status(report(**{"k" * 40_000: 1}))
    assert len(str(e.value)) < 200


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [
    b"", b"not json", b"\xff\xfe\x00", b"[]", b"42", b'"delta"', b"null",
    b'{"type":"command","name":"resync"}',
    b'{"v":6,"type":"command","name":"resync"}',
    b'{"v":0,"type":"command","name":"resync"}',
    b'{"v":"1","type":"command","name":"resync"}',
    b'{"v":null,"type":"command","name":"resync"}',
    b'{"v":5,"type":"reboot","name":"resync"}',
    b'{"v":5,"name":"resync"}',
    b'{"v":5,"type":"command"}',
    b'{"v":5,"type":"delta","network":"n"}',
    b'{"v":5,"type":"delta","network":"n","seq":"three"}',
    b'{"v":5,"type":"delta","network":"n","seq":1,"upsert":[{"host":"h"}]}',
    b'{"v":5,"type":"delta","network":"n","seq":1,"upsert":7}',
    b'{"v":5,"type":"delta","network":"n","seq":1,"settings":null}',
    b'{"v":5,"type":"snapshot","network":{"id":"n"},"members":[]}',
    b'{"v":5,"type":"snapshot","network":[],"members":[]}',
    b'{"v":5,"type":"status","agent_version":"1","peers":["k"]}',
    b'{"v":5,"type":"status","agent_version":"1","peers":[{"key":"k","rx":"lots"}]}',
    b'{"v":5,"type":"status","agent_version":"1","peers":[{"key":"k","rx":NaN}]}',
])
def test_malformed_or_unknown_messages_are_protocol_errors(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        protocol.decode(payload)


def test_refusals_say_what_is_wrong() -> None:
    with pytest.raises(ProtocolError, match="unsupported schema version 6"):
        protocol.decode(b'{"v":6,"type":"command","name":"x"}')
    with pytest.raises(ProtocolError, match="unknown message type 'reboot'"):
        protocol.decode(b'{"v":5,"type":"reboot"}')
    with pytest.raises(ProtocolError, match="not JSON"):
        protocol.decode(b"{")


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_are_protocol_errors(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        protocol.decode(payload)


@settings(max_examples=100)
@given(st.dictionaries(st.text(max_size=10).filter(lambda k: k != "type"), json_values, max_size=6))
def test_json_objects_without_a_type_are_protocol_errors(d: dict[str, Any]) -> None:
    for payload in (d, json.dumps(d), json.dumps(d).encode()):
        with pytest.raises(ProtocolError):
            protocol.decode(payload)


@settings(max_examples=250, deadline=None)
@given(mutated_messages())
def test_damaged_messages_decode_or_raise_protocol_error(d: dict[str, Any]) -> None:
    for payload in (d, json.dumps(d).encode()):
        try:
            msg = protocol.decode(payload)
        except ProtocolError:
            continue
        assert isinstance(msg, Delta | Snapshot | StatusReport | Command)


@pytest.mark.parametrize("payload", [
    b'{"v":1,"type":"delta","network":"n","seq":1e999}',
    b'{"v":1,"type":"status","agent_version":"1","peers":[{"key":"k","rx":1e999}]}',
    b'{"v":1,"type":"status","agent_version":"1","peers":[{"key":"k","handshake_age":-1e999}]}',
    b'{"v":1,"type":"delta","network":"n","seq":1,"upsert":[{"host":"h","name":"b","key":"k",'
    b'"ipv4":"a","ipv6":"b","port":1e999}]}',
], ids=["delta-seq", "status-rx", "status-handshake", "member-port"])
def test_huge_numbers_are_protocol_errors(payload: bytes) -> None:
    # 1e999 is standard JSON and parses to float inf, which int() refuses with OverflowError.
    with pytest.raises(ProtocolError):
        protocol.decode(payload)


def test_deeply_nested_json_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        protocol.decode(b'{"v":1,"type":"status","agent_version":' + b"[" * 5000 + b"]" * 5000 + b"}")


# --- topics ---------------------------------------------------------------------------------


def test_topics_have_the_documented_shapes() -> None:
    assert protocol.network_topic("net_a1") == "sm/n/net_a1"
    assert protocol.host_inbox_topic("host_b2") == "sm/h/host_b2/in"
    assert protocol.host_status_topic("host_b2") == "sm/h/host_b2/status"
    assert protocol.HOST_STATUS_FILTER == "sm/h/+/status"


def _mqtt_matches(topic_filter: str, topic: str) -> bool:
    f, t = topic_filter.split("/"), topic.split("/")
    return len(f) == len(t) and all(a in ("+", b) for a, b in zip(f, t, strict=True))


@given(st.integers(4, 40), st.randoms(use_true_random=False))
def test_status_topic_round_trips_to_its_host_id(length: int, rng: random.Random) -> None:
    host_id = new_id("host", rng=rng, length=length)  # type: ignore[arg-type]
    topic = protocol.host_status_topic(host_id)
    assert protocol.host_id_from_status_topic(topic) == host_id
    assert _mqtt_matches(protocol.HOST_STATUS_FILTER, topic)
    assert not _mqtt_matches(protocol.HOST_STATUS_FILTER, protocol.host_inbox_topic(host_id))


@pytest.mark.parametrize("topic", [
    "sm/h/host_b2/in", "sm/n/net_a1", "sm/h/host_b2/status/extra", "xx/h/host_b2/status",
    "sm/x/host_b2/status", "sm/h/status", "", "sm/h/host_b2/Status",
])
def test_other_topics_carry_no_status_host_id(topic: str) -> None:
    assert protocol.host_id_from_status_topic(topic) is None


@given(st.integers(4, 40), st.randoms(use_true_random=False))
def test_topics_fit_aws_iot_limits(length: int, rng: random.Random) -> None:
    for topic in (protocol.network_topic(new_id("network", rng=rng, length=length)),  # type: ignore[arg-type]
                  protocol.host_inbox_topic(new_id("host", rng=rng, length=length)),  # type: ignore[arg-type]
                  protocol.host_status_topic(new_id("host", rng=rng, length=length))):  # type: ignore[arg-type]
        assert topic.count("/") <= 7
        assert len(topic.encode()) <= 256
