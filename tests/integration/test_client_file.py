"""A client's wg-quick file and QR codes against the real tools: ``wg-quick strip``, ``wg setconf``
on a wireguard-go device, a handshake with its gateway, and ``zbarimg`` reading the QR codes.

Lab rules: the WireGuard devices live in the namespaces of a :class:`skymesh.lab.Lab` (underlay
198.18.0.0/24, no route out; interface names carry the lab's unique prefix, since
/var/run/wireguard is shared by all namespaces); the lab removes processes, namespaces and
sockets at exit, also on failure; every wait is bounded. No file with a DNS line is ever brought
up (``wg-quick up`` would change this machine's resolver): DNS is checked by parsing
(tests/unit/test_clientfile.py); here the file goes through ``wg-quick strip``, which only reads it.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import keys
from chalicelib.clientfile import PRIVATE_KEY_PLACEHOLDER, qr_png, qr_svg, render, without_scripts
from chalicelib.domain.ids import ClientId, HostId, NetworkId
from chalicelib.domain.models import Client, Gateway, Member, MemberRole, Network
from chalicelib.domain.plan import NetworkRecords, client_view
from skymesh.lab import Lab, missing_requirements
from skymesh.lab.netns import Node
from skymesh.lab.wait import wait_until

WAIT = 10.0
NET = Network(id=NetworkId("net_clientfile1"), name="office", ipv4_cidr="100.64.0.0/16",
              ipv6_cidr="fd00:1::/64")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not on PATH; scripts/bootstrap.sh installs it", pytrace=False)
    return path


def client_file(gateway_endpoint: str, gateway_public: str, client: Client, private_key: str | None) -> str:
    """The file of ``client`` in a network where host_gw (with ``gateway_public``) serves it."""
    gw = Member(NET.id, HostId("host_gw"), "gw", gateway_public, "100.64.0.1", "fd00:1::1", 51820,
                endpoints=(gateway_endpoint,),
                role=MemberRole(gateway=Gateway(remote_access=True, egress=("10.20.0.0/16",))))
    records = NetworkRecords.of(NET, [gw], [client])
    view = client_view(records, client.id)
    assert view is not None
    return render(view, client, private_key)


def a_client(public_key: str, **changes: object) -> Client:
    return Client(ClientId("cli_laptop"), NET.id, "laptop", public_key, "100.64.0.20", "fd00:1::20",
                  HostId("host_gw"), keepalive=1).with_changes(**changes)


def strip(text: str, ifname: str, tmp_path: Path) -> str:
    """``wg-quick strip`` of ``text`` saved as ``<ifname>.conf`` (wg-quick takes the interface name
    from the file name); fails the test with wg-quick's message when it refuses."""
    tool("wg-quick")
    path = tmp_path / f"{ifname}.conf"
    path.write_text(text)
    path.chmod(0o600)
    proc = subprocess.run(["wg-quick", "strip", str(path)], capture_output=True, text=True, timeout=WAIT)
    assert proc.returncode == 0, f"wg-quick strip refused the file: {proc.stderr}\n{text}"
    return proc.stdout


# --- QR codes ------------------------------------------------------------------------------


def zbar(path: Path) -> bytes:
    """What ``zbarimg`` reads from the image at ``path`` (exactly the bytes of the one QR code)."""
    tool("zbarimg")
    proc = subprocess.run(["zbarimg", "--quiet", "--raw", "-Sbinary", str(path)], capture_output=True,
                          timeout=30)
    assert proc.returncode == 0, f"zbarimg found no QR code in {path.name}: {proc.stderr.decode()}"
    return proc.stdout


@pytest.fixture
def full_file() -> str:
    """A file with every optional line, a private key, and a name that is not ASCII."""
    priv = keys.new_wireguard_key()
    client = a_client(keys.wireguard_public_key(priv), name="Zoë's laptop", dns=("100.64.0.1", "fd00:1::1"),
                      post_up="ip rule add table 51820", post_down="ip rule del table 51820",
                      extra_addresses=("192.168.50.0/24",))
    return client_file("198.18.0.2:51820", keys.wireguard_public_key(keys.new_wireguard_key()), client, priv)


@pytest.mark.parametrize("kind", ["png", "svg"])
def test_the_qr_code_decodes_to_the_file_without_its_scripts(kind: str, full_file: str,
                                                              tmp_path: Path) -> None:
    if kind == "svg":
        tool("rsvg-convert")  # zbarimg's ImageMagick reads SVG through it
    image = (qr_png if kind == "png" else qr_svg)(full_file)
    path = tmp_path / f"client.{kind}"
    path.write_bytes(image)
    decoded = zbar(path)
    assert decoded == without_scripts(full_file).encode()
    assert b"PostUp" not in decoded and b"PostDown" not in decoded
    assert b"PrivateKey = " in decoded and b"DNS = " in decoded


# --- wg-quick and wg ---------------------------------------------------------------------------


def test_wg_quick_strip_keeps_what_wg_reads_and_drops_what_wg_quick_does(full_file: str,
                                                                          tmp_path: Path) -> None:
    stripped = strip(full_file, "smcf0", tmp_path)
    keys_left = {line.split("=", 1)[0].strip() for line in stripped.splitlines()
                 if "=" in line and not line.lstrip().startswith("#")}
    assert keys_left == {"PrivateKey", "PublicKey", "AllowedIPs", "Endpoint", "PersistentKeepalive"}


def test_the_placeholder_file_is_read_by_wg_quick_and_refused_by_wg_as_no_key(tmp_path: Path) -> None:
    """Without the private key, the file still parses, and bringing it up fails loudly at the
    placeholder instead of making an interface with no key."""
    client = a_client(keys.wireguard_public_key(keys.new_wireguard_key()))
    text = client_file("198.18.0.2:51820", keys.wireguard_public_key(keys.new_wireguard_key()), client, None)
    stripped = strip(text, "smcf1", tmp_path)
    assert f"PrivateKey = {PRIVATE_KEY_PLACEHOLDER}" in stripped
    path = tmp_path / "stripped.conf"
    path.write_text(stripped)
    tool("wg")
    # `wg setconf` parses the whole file before it looks for the device: the error is the key's
    proc = subprocess.run(["wg", "setconf", "smcfnone", str(path)], capture_output=True, text=True,
                          timeout=WAIT)
    assert proc.returncode != 0
    assert "Key is not the correct length or format" in proc.stderr, proc.stderr


@pytest.fixture
def lab() -> Iterator[Lab]:
    missing = missing_requirements(control_plane=False, wireguard=True)
    if missing:
        pytest.skip("needs " + ", ".join(missing))
    with Lab() as lab:
        yield lab


def wireguard_go(node: Node) -> str:
    """A wireguard-go device in ``node``'s namespace (foreground, so the lab stops it); its name."""
    ifname = node.wg_ifname()
    sock = Path("/var/run/wireguard") / f"{ifname}.sock"
    proc = node.popen(["wireguard-go", "-f", ifname], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_until(lambda: sock.exists() or proc.poll() is not None, WAIT, f"wireguard-go {ifname}'s socket")
    assert proc.poll() is None, f"wireguard-go exited: {proc.stderr.read().decode() if proc.stderr else ''}"
    return ifname


def wg(node: Node, *args: str) -> str:
    res = node.run(["wg", *args], timeout=WAIT)
    assert res.returncode == 0, f"wg {' '.join(args)} failed: {res.stderr}"
    return res.stdout


@pytest.mark.root
def test_the_stripped_file_sets_a_real_device_that_shakes_hands_with_its_gateway(
        lab: Lab, tmp_path: Path) -> None:
    gw_node, client_node = lab.add_node("gw"), lab.add_node("cl")
    gw_priv, client_priv = keys.new_wireguard_key(), keys.new_wireguard_key()
    gw_pub, client_pub = keys.wireguard_public_key(gw_priv), keys.wireguard_public_key(client_priv)
    client = a_client(client_pub, dns=("100.64.0.1",), post_up="true")  # DNS/PostUp: stripped here
    text = client_file(f"{gw_node.ip}:51820", gw_pub, client, client_priv)

    gw_if, client_if = wireguard_go(gw_node), wireguard_go(client_node)
    key_file = lab.tempdir("gwkey") / "key"
    key_file.write_text(gw_priv + "\n")
    key_file.chmod(0o600)
    wg(gw_node, "set", gw_if, "listen-port", "51820", "private-key", str(key_file),
       "peer", client_pub, "allowed-ips", "100.64.0.20/32,fd00:1::20/128")

    stripped = tmp_path / "stripped.conf"
    stripped.write_text(strip(text, client_if, tmp_path))
    wg(client_node, "setconf", client_if, str(stripped))

    shown = wg(client_node, "showconf", client_if)
    assert f"PrivateKey = {client_priv}" in shown
    assert f"PublicKey = {gw_pub}" in shown
    assert f"Endpoint = {gw_node.ip}:51820" in shown
    assert "PersistentKeepalive = 1" in shown
    allowed = next(line for line in shown.splitlines() if line.startswith("AllowedIPs"))
    assert allowed.split("=", 1)[1].replace(" ", "").split(",") == [
        "100.64.0.0/16", "fd00:1::/64", "10.20.0.0/16"]

    # the keepalive makes the client start a handshake: the gateway accepts the file's key
    def handshake() -> bool:
        out = wg(gw_node, "show", gw_if, "latest-handshakes").split()
        return len(out) == 2 and out[0] == client_pub and int(out[1]) > 0

    wait_until(handshake, WAIT, "the gateway's handshake with the client's file")
