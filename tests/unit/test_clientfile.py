"""A remote-access client's wg-quick file as the plan and its record make it (chalicelib.clientfile).

Read back by a small parser of the wg-quick format (sections, ``Key = value``, ``#`` comments),
so each test says what a person who opens the file finds in it. That real tools accept the
file (``wg-quick strip``, ``wg setconf``) and that its QR codes decode back is shown in
tests/integration/test_client_file.py.
"""

from __future__ import annotations

import pytest

from agent import keys
from chalicelib.clientfile import PRIVATE_KEY_PLACEHOLDER, qr_terminal, render, without_scripts
from chalicelib.domain.ids import ClientId, HostId, NetworkId
from chalicelib.domain.models import Client, Gateway, Member, MemberRole, Network
from chalicelib.domain.plan import NetworkRecords, client_view

NET = Network(id=NetworkId("net_files00001"), name="office", ipv4_cidr="100.64.0.0/16",
              ipv6_cidr="fd00:1::/64", mtu=1380)
GW_PRIV = keys.new_wireguard_key()
GW_PUB = keys.wireguard_public_key(GW_PRIV)
CLIENT_PRIV = keys.new_wireguard_key()
CLIENT_PUB = keys.wireguard_public_key(CLIENT_PRIV)


def records(client: Client, *, internet: bool = False, gw_endpoint: str | None = None,
            host_endpoints: tuple[str, ...] = ("198.18.0.10:51820",)) -> NetworkRecords:
    """A network of a plain member, a remote-access gateway with an egress range, and ``client``."""
    gw = Member(NET.id, HostId("host_gw"), "gw", GW_PUB, "100.64.0.1", "fd00:1::1", 51820,
                endpoints=host_endpoints,
                role=MemberRole(gateway=Gateway(remote_access=True, egress=("10.20.0.0/16",),
                                                internet=internet, endpoint=gw_endpoint)))
    plain = Member(NET.id, HostId("host_b"), "b", keys.wireguard_public_key(keys.new_wireguard_key()),
                   "100.64.0.2", "fd00:1::2", 51820)
    other = Client(ClientId("cli_router"), NET.id, "router",
                   keys.wireguard_public_key(keys.new_wireguard_key()), "100.64.0.30", "fd00:1::30",
                   HostId("host_gw"), extra_addresses=("192.168.50.0/24",))
    return NetworkRecords.of(NET, [gw, plain], [client, other])


def make_client(**changes: object) -> Client:
    base = Client(ClientId("cli_phone"), NET.id, "phone", CLIENT_PUB, "100.64.0.20", "fd00:1::20",
                  HostId("host_gw"))
    return base.with_changes(**changes)


def file_of(client: Client, private_key: str | None = CLIENT_PRIV, **kw: object) -> str:
    view = client_view(records(client, **kw), client.id, full_tunnel=client.full_tunnel)  # type: ignore[arg-type]
    assert view is not None
    return render(view, client, private_key)


def parse(text: str) -> list[tuple[str, dict[str, str]]]:
    """The sections of a wg-quick file, each ``(name, {key: value})``, the way wg-quick reads it:
    everything from ``#`` on is dropped, a key appears once per section."""
    sections: list[tuple[str, dict[str, str]]] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            sections.append((line[1:-1], {}))
            continue
        key, sep, value = line.partition("=")
        assert sep and sections, f"a line wg-quick cannot read: {raw!r}"
        section = sections[-1][1]
        assert key.strip() not in section, f"{key.strip()} twice in [{sections[-1][0]}]"
        section[key.strip()] = value.strip()
    return sections


def split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",")]


def test_the_file_has_the_interface_and_the_gateway_as_its_one_peer() -> None:
    client = make_client(dns=("100.64.0.1", "fd00:1::1"), keepalive=15)
    (iface_name, iface), (peer_name, peer) = parse(file_of(client))
    assert (iface_name, peer_name) == ("Interface", "Peer")
    assert split(iface["Address"]) == ["100.64.0.20/32", "fd00:1::20/128"]
    assert iface["PrivateKey"] == CLIENT_PRIV
    assert iface["MTU"] == "1380"
    assert split(iface["DNS"]) == ["100.64.0.1", "fd00:1::1"]
    assert "PostUp" not in iface and "PostDown" not in iface
    assert peer["PublicKey"] == GW_PUB
    # split tunnel: the network's ranges, the egress range, the other client's LAN
    assert split(peer["AllowedIPs"]) == ["100.64.0.0/16", "fd00:1::/64", "10.20.0.0/16", "192.168.50.0/24"]
    assert peer["Endpoint"] == "198.18.0.10:51820"
    assert peer["PersistentKeepalive"] == "15"


def test_the_gateways_own_endpoint_wins_over_the_hosts() -> None:
    (_, _), (_, peer) = parse(file_of(make_client(), gw_endpoint="vpn.example.test:443"))
    assert peer["Endpoint"] == "vpn.example.test:443"


def test_optional_lines_are_left_out() -> None:
    text = file_of(make_client(keepalive=0), host_endpoints=())
    (_, iface), (_, peer) = parse(text)
    assert set(iface) == {"Address", "PrivateKey", "MTU"}
    assert set(peer) == {"PublicKey", "AllowedIPs"}


def test_a_full_tunnel_client_sends_everything_to_its_internet_gateway() -> None:
    (_, _), (_, peer) = parse(file_of(make_client(full_tunnel=True), internet=True))
    assert split(peer["AllowedIPs"]) == ["0.0.0.0/0", "::/0"]


def test_a_clients_own_lan_is_not_routed_back_into_the_tunnel() -> None:
    client = make_client(extra_addresses=("192.168.77.0/24",))
    (_, _), (_, peer) = parse(file_of(client))
    assert "192.168.77.0/24" not in split(peer["AllowedIPs"])
    assert "192.168.50.0/24" in split(peer["AllowedIPs"])


def test_scripts_are_in_the_file_and_not_in_what_the_qr_code_carries() -> None:
    text = file_of(make_client(post_up="ip rule add table 7", post_down="ip rule del table 7"))
    (_, iface), _ = parse(text)
    assert iface["PostUp"] == "ip rule add table 7"
    assert iface["PostDown"] == "ip rule del table 7"
    qr_text = without_scripts(text)
    assert "ip rule" not in qr_text
    assert qr_text == "".join(line for line in text.splitlines(keepends=True)
                              if not line.startswith(("PostUp", "PostDown")))
    (_, iface_qr), (_, peer_qr) = parse(qr_text)
    assert iface_qr == {k: v for k, v in iface.items() if k not in ("PostUp", "PostDown")}
    assert peer_qr == parse(text)[1][1]


def test_without_the_private_key_the_file_says_where_it_goes() -> None:
    text = file_of(make_client(), private_key=None)
    (_, iface), _ = parse(text)
    assert iface["PrivateKey"] == PRIVATE_KEY_PLACEHOLDER
    comment = [line for line in text.splitlines() if line.startswith("#")]
    said = " ".join(comment)
    assert "does not hold" in said and "private key" in said
    assert CLIENT_PUB in said, "the comment names the public key whose private half goes there"
    # the comment is just above the line it talks about
    lines = text.splitlines()
    at = lines.index(f"PrivateKey = {PRIVATE_KEY_PLACEHOLDER}")
    assert lines[at - 1].startswith("#")
    assert CLIENT_PRIV not in text


def test_the_header_names_the_client_and_the_network_on_one_comment_line() -> None:
    text = file_of(make_client(name="Anna's phone\n[Peer]\nPublicKey = evil"))
    header = text.splitlines()[0]
    assert header.startswith("#") and "cli_phone" in header and NET.id in header
    assert "Anna's phone [Peer] PublicKey = evil" in header
    assert [name for name, _ in parse(text)] == ["Interface", "Peer"]


@pytest.mark.parametrize("field", ["post_up", "post_down"])
@pytest.mark.parametrize("value", ["echo a\nPublicKey = x", "echo a # b", "echo a\r"])
def test_a_script_that_would_leave_its_line_is_refused(field: str, value: str) -> None:
    with pytest.raises(ValueError, match="one line"):
        file_of(make_client(**{field: value}))


def test_the_terminal_qr_code_is_block_characters() -> None:
    drawn = qr_terminal(file_of(make_client(post_up="echo secret")))
    rows = drawn.splitlines()
    assert len(rows) > 20 and len({len(r) for r in rows}) == 1, "a square of equal rows"
    assert set("".join(rows)) <= set(" █▀▄")
