"""The admin commands' argparse: the ``network``, ``key`` and ``host`` groups, their options,
and running the chosen command with its exit code."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from ..client import ApiClient
from ..errors import EXIT_OK, CliError
from .argtypes import count, parse_duration, parse_time
from .clients import (
    client_config,
    client_create,
    client_delete,
    client_disable,
    client_enable,
    client_list,
    client_qr,
    client_rotate_key,
    client_show,
)
from .context import Command, Context
from .gateways import gateway_list, gateway_set, gateway_show, gateway_unset, member_set
from .groups import (
    group_add,
    group_create,
    group_delete,
    group_list,
    group_priority,
    group_remove,
    group_rotate_key,
    group_show,
)
from .hosts import host_delete, host_list, host_show, host_update
from .keys import key_create, key_list, key_revoke
from .latency import latency_show
from .networks import network_create, network_delete, network_list, network_show, network_update
from .relays import relay_delete, relay_list, relay_set
from .settings import CONFIG_NAME, ENV_ADMIN_KEY, ENV_API, resolve_settings

__all__ = ["add_commands", "build_parser", "main", "run_command"]


def run_command(args: argparse.Namespace, *, env: Mapping[str, str] | None = None,
                out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the command argparse chose (``args.admin_command``); the exit code, never a traceback for
    an expected failure."""
    err = err or sys.stderr
    try:
        settings = resolve_settings(args.api, args.key, os.environ if env is None else env)
        args.admin_command(Context(ApiClient(settings.api_url, settings.admin_key), args, out or sys.stdout))
    except CliError as e:
        print(f"error: {e.message}", file=err)
        if e.hint:
            print(f"hint: {e.hint}", file=err)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    return EXIT_OK


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and output")
    group.add_argument("--api", metavar="URL",
                       help=f"API base URL (default: ${ENV_API}, else api_url in "
                            f"$SKYMESH_HOME/{CONFIG_NAME})")
    group.add_argument("--key", metavar="ADMIN_KEY",
                       help=f"admin key (default: ${ENV_ADMIN_KEY}, else admin_key in "
                            f"$SKYMESH_HOME/{CONFIG_NAME})")
    group.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    group.add_argument("--page-size", type=count, metavar="N",
                       help="records per API call when listing (the API says which sizes it takes; "
                            "default: its own); lists are complete either way")
    return common


def _leaf(group: Any, name: str, command: Command, help_text: str,
          common: argparse.ArgumentParser, ref: str | None = None) -> argparse.ArgumentParser:
    """A command's parser; ``ref`` names its ``ID|NAME`` argument when it acts on one record."""
    parser: argparse.ArgumentParser = group.add_parser(name, help=help_text, description=help_text,
                                                       parents=[common])
    parser.set_defaults(func=run_command, admin_command=command)
    if ref is not None:
        parser.add_argument(ref, metavar="ID|NAME")
    return parser


def _group(subparsers: Any, name: str, help_text: str) -> Any:
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    return parser.add_subparsers(dest=f"{name}_action", metavar="ACTION", required=True)


def _add_network_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    g = _group(subparsers, "network", "create, list, show, change and delete networks")
    p = _leaf(g, "create", network_create, "create a network", common)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--ipv4", required=True, metavar="CIDR", help="IPv4 overlay range, e.g. 100.64.0.0/16")
    p.add_argument("--ipv6", metavar="CIDR", help="IPv6 overlay range (default: a random ULA /64)")
    _network_settings(p)
    _leaf(g, "list", network_list, "list networks", common)
    _leaf(g, "show", network_show, "show a network and its hosts", common, "network")
    p = _leaf(g, "update", network_update, "change a network's name or settings", common, "network")
    p.add_argument("--name", dest="new_name", metavar="NAME", help="new name")
    _network_settings(p)
    p = _leaf(g, "delete", network_delete, "delete a network", common, "network")
    p.add_argument("--force", action="store_true", help="take its hosts out of it first")


def _network_settings(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen-port", type=count, metavar="N", help="default WireGuard port of hosts")
    p.add_argument("--keepalive", type=count, metavar="N",
                   help="persistent keepalive in seconds (0 = off)")
    p.add_argument("--mtu", type=count, metavar="N", help="interface MTU, 1280-9000")


def _add_key_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    g = _group(subparsers, "key", "create, list and revoke enrollment keys")
    p = _leaf(g, "create", key_create, "create an enrollment key (its token is shown once)", common)
    p.add_argument("--network", action="append", required=True, metavar="ID|NAME",
                   help="network a host enrolled with it joins (repeat for several)")
    p.add_argument("--uses", type=count, metavar="N", help="how many hosts may enroll with it")
    life = p.add_mutually_exclusive_group()
    life.add_argument("--expires-in", type=parse_duration, metavar="DURATION",
                      help="valid for this long, e.g. 1h, 7d, 1h30m")
    life.add_argument("--expires-at", type=parse_time, metavar="RFC3339",
                      help="valid until this time, e.g. 2030-01-01T00:00:00Z")
    life.add_argument("--unlimited", action="store_true", help="any number of hosts, no expiry")
    p.add_argument("--tag", action="append", metavar="T", help="tag given to hosts it enrolls (repeatable)")
    p.add_argument("--relay", metavar="HOST", help="a member of every network of the key that relays every "
                   "host enrolled with it, from its first config (issue 10)")
    _leaf(g, "list", key_list, "list enrollment keys (no secrets)", common)
    p = _leaf(g, "revoke", key_revoke, "revoke an enrollment key (hosts it enrolled stay)", common)
    p.add_argument("key_id", metavar="ID")


def _add_host_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    g = _group(subparsers, "host", "list, show, change and delete hosts")
    _leaf(g, "list", host_list, "list hosts", common)
    _leaf(g, "show", host_show, "show a host, its addresses and peers", common, "host")
    p = _leaf(g, "update", host_update, "change a host's name, endpoints, port or tags", common, "host")
    p.add_argument("--name", dest="new_name", metavar="NAME", help="new name")
    p.add_argument("--listen-port", type=count, metavar="N", help="its WireGuard port")
    ends = p.add_mutually_exclusive_group()
    ends.add_argument("--endpoint", action="append", metavar="HOST:PORT",
                      help="where peers reach it; replaces the list (repeatable)")
    ends.add_argument("--no-endpoints", action="store_true", help="clear its endpoints")
    tags = p.add_mutually_exclusive_group()
    tags.add_argument("--tag", action="append", metavar="T", help="replaces its tags (repeatable)")
    tags.add_argument("--no-tags", action="store_true", help="clear its tags")
    _leaf(g, "delete", host_delete, "delete a host (it leaves every network)", common, "host")


# ----------------------------------------------------------------------------- issue 9: gateways
def _add_gateway_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    g = _group(subparsers, "gateway", "make members gateways: remote access, egress ranges, internet")
    p = _leaf(g, "set", gateway_set, "make a member a gateway, or change its role (what is not given "
              "stays)", common, "network")
    p.add_argument("host", metavar="HOST")
    p.add_argument("--remote-access", action=argparse.BooleanOptionalAction, default=None,
                   help="devices without an agent connect to it with a wg-quick file")
    egress = p.add_mutually_exclusive_group()
    egress.add_argument("--egress", action="append", metavar="CIDR",
                        help="a range behind it that every member routes through it; replaces the list "
                             "(repeatable)")
    egress.add_argument("--no-egress", action="store_true", help="clear its egress ranges")
    p.add_argument("--internet", action=argparse.BooleanOptionalAction, default=None,
                   help="members that choose it send their internet traffic through it")
    ends = p.add_mutually_exclusive_group()
    ends.add_argument("--endpoint", metavar="HOST:PORT", help="where clients reach it (default: the "
                      "host's first endpoint)")
    ends.add_argument("--host-endpoint", action="store_true", help="clients reach it at the host's first "
                      "endpoint again")
    _leaf(g, "list", gateway_list, "list a network's gateways", common, "network")
    p = _leaf(g, "show", gateway_show, "show a gateway", common, "network")
    p.add_argument("host", metavar="HOST")
    p = _leaf(g, "unset", gateway_unset, "remove a member's gateway role and every route through it", common,
              "network")
    p.add_argument("host", metavar="HOST")
    p.add_argument("--force", action="store_true",
                   help="also while clients or hosts use it (clients stay, unserved)")

    g = _group(subparsers, "member", "a host's settings in one network")
    p = _leaf(g, "set", member_set, "choose a member's internet gateway and tunnel", common, "network")
    p.add_argument("host", metavar="HOST")
    p.add_argument("--internet-gateway", metavar="HOST|auto|none",
                   help="the member with internet that carries its internet traffic; auto: any internet "
                        "gateway of the network (the agent moves to the next live one when the active one "
                        "dies; pin one with --pin 0.0.0.0/0=HOST); none: no gateway")
    tunnel = p.add_mutually_exclusive_group()
    tunnel.add_argument("--full-tunnel", dest="full_tunnel", action="store_const", const=True, default=None,
                        help="all its traffic goes through the internet gateway")
    tunnel.add_argument("--split-tunnel", dest="full_tunnel", action="store_const", const=False,
                        help="only the network's and egress ranges go through the overlay")
    p.add_argument("--pin", action="append", default=[], metavar="CIDR=HOST|auto",
                   help="send a range several gateways serve (0.0.0.0/0: internet access, with "
                        "--internet-gateway auto) to this one gateway only (auto: by latency and failover "
                        "again); repeatable")


# ----------------------------------------------------------------------------- issue 9: clients
def _add_client_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """``skymesh client …`` (issue 9): remote-access clients of a network."""
    g = _group(subparsers, "client", "remote-access clients (devices without an agent): create, list, show, "
               "config, qr, enable, disable, rotate-key, delete")

    def one(name: str, command: Command, help_text: str) -> argparse.ArgumentParser:
        p = _leaf(g, name, command, help_text, common, "network")
        p.add_argument("client", metavar="CLIENT", help="the client's id or name")
        return p

    def file_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", metavar="DIR", help="where NAME.conf is written (default: here)")
        p.add_argument("--qr", action="store_true", help="also print the file's QR code in the terminal")

    p = _leaf(g, "create", client_create, "add a client: its key pair is made here, NAME.conf written "
              "(mode 0600) with its private key, which is sent nowhere", common, "network")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--gateway", required=True, metavar="HOST|GROUP",
                   help="the remote-access gateway it uses, or a gateway group (its id or name)")
    p.add_argument("--dns", action="append", metavar="IP", help="DNS server of its file (repeatable)")
    p.add_argument("--extra", action="append", metavar="CIDR",
                   help="a range behind the client, routed to it by every host (repeatable)")
    p.add_argument("--address", metavar="IP", help="its IPv4 address (default: a free one)")
    p.add_argument("--full-tunnel", action="store_true",
                   help="all its traffic through its gateway (an internet gateway)")
    p.add_argument("--keepalive", type=count, metavar="N", help="PersistentKeepalive, seconds (0 = off)")
    p.add_argument("--post-up", metavar="CMD", help="one line for PostUp (left out of QR codes)")
    p.add_argument("--post-down", metavar="CMD", help="one line for PostDown")
    file_options(p)
    _leaf(g, "list", client_list, "list a network's clients, connected or not", common, "network")
    one("show", client_show, "show a client and its link")
    one("config", client_config, "print the client's file as the API has it (without its private key)")
    p = one("qr", client_qr, "print the QR code of a client's file (PostUp/PostDown left out)")
    p.add_argument("--file", metavar="NAME.conf", help="the local file with its private key (default: "
                   "the API's file, which has none)")
    img = p.add_mutually_exclusive_group()
    img.add_argument("--png", metavar="PATH", help="write a PNG instead of printing")
    img.add_argument("--svg", metavar="PATH", help="write an SVG instead of printing")
    one("enable", client_enable, "let the client connect again")
    one("disable", client_disable, "drop the client's peer from its gateway (its file stays valid)")
    p = one("rotate-key", client_rotate_key, "make a new key pair here, register its public key and "
            "write NAME.conf anew (the old file stops working)")
    file_options(p)
    one("delete", client_delete, "delete a client (its addresses are freed)")


# ----------------------------------------------------------------------------- issue 10: relays
def _add_relay_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    g = _group(subparsers, "relay", "members that relay hosts that cannot be reached directly")
    p = _leaf(g, "set", relay_set, "a member relays exactly these hosts (those left out go direct again)",
              common, "network")
    p.add_argument("relay", metavar="RELAY", help="the relaying member's id or name")
    p.add_argument("hosts", nargs="+", metavar="HOST", help="the members it relays")
    _leaf(g, "list", relay_list, "list a network's relays and the hosts each relays", common, "network")
    p = _leaf(g, "delete", relay_delete, "stop a relay: the hosts it relays go direct again", common,
              "network")
    p.add_argument("relay", metavar="RELAY")


# ----------------------------------------------------------------------------- issue 11: gateway groups
def _add_group_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    g = _group(subparsers, "group", "HA gateway groups: remote-access gateways sharing one identity and a "
               "floating endpoint")
    p = _leaf(g, "create", group_create, "create a gateway group; its clients' files name the floating "
              "endpoint and the group's key", common, "network")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--member", action="append", required=True, metavar="HOST",
                   help="a remote-access gateway of the network (repeatable, in priority order: first = "
                        "preferred; 1 to 4)")
    p.add_argument("--floating", required=True, metavar="ADDR:PORT",
                   help="the floating endpoint (an IP literal; a port other than the members' mesh port "
                        "and mesh port + 1)")
    _leaf(g, "list", group_list, "list a network's gateway groups", common, "network")

    def one(name: str, command: Any, help_text: str, hosts: bool = False) -> None:
        p = _leaf(g, name, command, help_text, common, "network")
        p.add_argument("group", metavar="GROUP", help="the group's id or name")
        if hosts:
            p.add_argument("hosts", nargs="+", metavar="HOST")

    one("show", group_show, "show a group: members, active member, key")
    one("add", group_add, "add members (last in priority)", hosts=True)
    one("remove", group_remove, "remove members; says whether each still knows the group's key", hosts=True)
    one("priority", group_priority, "set the priority order (every member, first = preferred)", hosts=True)
    one("rotate-key", group_rotate_key, "ask a member for a new group key (clients then need its public key)")
    one("delete", group_delete, "delete a group (refused while clients name it)")


def add_commands(subparsers: Any) -> None:
    """Register ``network``, ``key`` and ``host`` on an ``add_subparsers()`` object.

    Each leaf parser sets ``func`` (:func:`run_command`), so the caller runs
    ``sys.exit(args.func(args))`` after parsing.
    """
    common = _common_options()
    _add_network_commands(subparsers, common)
    _add_key_commands(subparsers, common)
    _add_host_commands(subparsers, common)
    _add_gateway_commands(subparsers, common)  # issue 9
    _add_client_commands(subparsers, common)  # issue 9
    # issue 10
    _leaf(subparsers, "latency", latency_show, "the latency matrix of a network: who measured whom "
          "through the tunnel (RTT, loss, up), from the agents' latest reports", common, "network")
    _add_relay_commands(subparsers, common)
    _add_group_commands(subparsers, common)  # issue 11


def build_parser() -> argparse.ArgumentParser:
    """A ``skymesh`` parser with only the admin commands (for ``python -m skymesh.admin`` and tests)."""
    parser = argparse.ArgumentParser(prog="skymesh", description="skymesh admin CLI")
    add_commands(parser.add_subparsers(dest="group", metavar="COMMAND", required=True))
    return parser


def main(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None,
         out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Parse ``argv`` and run it; the exit code (argparse's own usage errors still exit 2)."""
    args = build_parser().parse_args(argv)
    return run_command(args, env=env, out=out, err=err)

