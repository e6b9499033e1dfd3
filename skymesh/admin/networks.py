"""``skymesh network create|list|show|update|delete``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..client import ApiError
from ..errors import CliError
from .context import Context, all_hosts, all_networks, require_changes, resolve
from .output import format_fields, format_table, relative_time

__all__ = ["network_create", "network_delete", "network_list", "network_show", "network_update"]


def _network_fields(net: Mapping[str, Any], ctx: Context) -> str:
    return format_fields([
        ("Name", net["name"]), ("ID", net["id"]), ("IPv4", net["ipv4_cidr"]), ("IPv6", net["ipv6_cidr"]),
        ("Listen port", net["listen_port"]),
        ("Keepalive", f"{net['keepalive']}s" if net["keepalive"] else "off"),
        ("MTU", net["mtu"]), ("Seq", net["seq"]),
        ("Created", f"{relative_time(net['created_at'], ctx.now)} ({net['created_at']})"),
    ])


def _host_address(host: Mapping[str, Any], network_id: str) -> Mapping[str, Any] | None:
    return next((a for a in host["addresses"] if a["network_id"] == network_id), None)


def network_create(ctx: Context) -> None:
    """``network create NAME --ipv4 CIDR ...``: the new network."""
    a = ctx.args
    net = ctx.client.create_network(a.name, a.ipv4, ipv6_cidr=a.ipv6, listen_port=a.listen_port,
                                    keepalive=a.keepalive, mtu=a.mtu)
    if not ctx.changed("network", net, "created"):
        ctx.print(_network_fields(net, ctx))


def network_list(ctx: Context) -> None:
    """``network list``: one row per network with its host counts."""
    nets = all_networks(ctx)
    if ctx.listed_alone("networks", nets,
                        "no networks yet: create one with `skymesh network create NAME --ipv4 CIDR`"):
        return
    hosts = all_hosts(ctx)
    rows = []
    for net in nets:
        members = [h for h in hosts if _host_address(h, net["id"])]
        online = sum(1 for h in members if h["status"]["online"])
        rows.append((net["name"], net["id"], net["ipv4_cidr"], net["ipv6_cidr"], len(members), online,
                     relative_time(net["created_at"], ctx.now)))
    ctx.print(format_table(("NAME", "ID", "IPV4", "IPV6", "HOSTS", "ONLINE", "CREATED"), rows))


def network_show(ctx: Context) -> None:
    """``network show ID|NAME``: its settings and its hosts."""
    ref = resolve(all_networks(ctx), ctx.args.network, "network")
    net = ctx.client.get_network(ref["id"])
    if ctx.as_json:
        return ctx.print_json(net)
    ctx.print(_network_fields(net, ctx))
    members = [(h, _host_address(h, net["id"])) for h in all_hosts(ctx)]
    rows = [(h["name"], h["id"], addr["ipv4"], addr["ipv6"],
             "online" if h["status"]["online"] else "offline",
             relative_time(h["status"]["last_seen"], ctx.now))
            for h, addr in members if addr is not None]
    online = sum(1 for r in rows if r[4] == "online")
    ctx.print()
    if not rows:
        return ctx.print("Hosts: none yet (enroll one with a key from `skymesh key create`)")
    ctx.print(f"Hosts: {len(rows)}, {online} online")
    ctx.print(format_table(("NAME", "ID", "IPV4", "IPV6", "STATUS", "LAST SEEN"), rows))


def network_update(ctx: Context) -> None:
    """``network update ID|NAME [--name] [--keepalive] [--mtu] [--listen-port]``."""
    a = ctx.args
    body = {k: v for k, v in (("name", a.new_name), ("keepalive", a.keepalive), ("mtu", a.mtu),
                              ("listen_port", a.listen_port)) if v is not None}
    require_changes(body, "--name, --keepalive, --mtu or --listen-port")
    ref = resolve(all_networks(ctx), a.network, "network")
    net = ctx.client.update_network(ref["id"], body)
    if not ctx.changed("network", net, "updated"):
        ctx.print(_network_fields(net, ctx))


def network_delete(ctx: Context) -> None:
    """``network delete ID|NAME [--force]``; without ``--force`` a network with hosts is refused."""
    ref = resolve(all_networks(ctx), ctx.args.network, "network")
    try:
        ctx.client.delete_network(ref["id"], force=ctx.args.force)
    except ApiError as e:
        if e.code != "network_not_empty":
            raise
        raise CliError(e.message.replace(" or delete with ?force=true", ""),
                       hint="pass --force to take its hosts out of it and delete it") from None
    if not ctx.as_json:
        ctx.print(f"network {ref['name']} deleted ({ref['id']})")
