"""The pure parts of a gateway group's data plane (:mod:`agent.floating`): the announcements a new
active member sends for the floating address, and the nftables table that makes the group port's
own packets leave from it. The lab runs them for real in ``tests/e2e/test_floating.py``."""

from __future__ import annotations

import ipaddress
import struct

from agent.floating import garp_frame, neighbour_advertisement, snat_ruleset, snat_table
from agent.gateway import table_name

MAC = bytes.fromhex("0201020304aa")


def test_a_gratuitous_arp_is_a_broadcast_request_for_the_address_from_itself() -> None:
    frame = garp_frame(MAC, "198.18.0.200")
    dst, src, ethertype = frame[:6], frame[6:12], struct.unpack("!H", frame[12:14])[0]
    htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", frame[14:22])
    sha, spa, tha, tpa = frame[22:28], frame[28:32], frame[32:38], frame[38:42]
    assert (dst, src, ethertype) == (b"\xff" * 6, MAC, 0x0806)
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 1)
    assert sha == MAC and tha == b"\x00" * 6
    assert spa == tpa == ipaddress.IPv4Address("198.18.0.200").packed
    assert len(frame) == 42


def test_an_unsolicited_neighbour_advertisement_overrides_and_carries_the_link_address() -> None:
    body = neighbour_advertisement(MAC, "fd00::200")
    kind, code, _checksum, flags = struct.unpack("!BBHI", body[:8])
    assert (kind, code) == (136, 0)
    assert flags == 0x20000000  # override only: not a router, not solicited (sent to all nodes)
    assert body[8:24] == ipaddress.IPv6Address("fd00::200").packed
    assert body[24:] == bytes([2, 1]) + MAC  # target link-layer address option


def _rules(doc: dict) -> list[list[dict]]:
    return [c["add"]["rule"]["expr"] for c in doc["nftables"] if "rule" in c.get("add", {})]


def test_the_rewrite_table_is_our_own_and_without_an_address_only_removes_itself() -> None:
    assert snat_table("skg1").startswith("skymesh_") and snat_table("skg1") != table_name("skg1")
    doc = snat_ruleset("skg1", 51900, None)
    # add + delete: removing a table that is not there is no error
    assert [next(iter(c)) for c in doc["nftables"]] == ["metainfo", "add", "delete"]
    assert all(c[k]["table"]["name"] == snat_table("skg1") for c in doc["nftables"][1:] for k in c)


def test_the_rewrite_sets_the_source_of_the_group_ports_packets_to_the_floating_address() -> None:
    for ip, fam in (("198.18.0.200", "ip"), ("fd00::200", "ip6")):
        (expr,) = _rules(snat_ruleset("skg1", 51900, ip))
        sport, not_yet, rewrite = expr
        assert sport["match"] == {"op": "==", "left": {"payload": {"protocol": "udp", "field": "sport"}},
                                  "right": 51900}
        assert not_yet["match"]["op"] == "!=" and not_yet["match"]["right"] == ip
        assert rewrite == {"mangle": {"key": {"payload": {"protocol": fam, "field": "saddr"}}, "value": ip}}
