"""``skymesh gateway set|list|show|unset`` and ``skymesh member set`` (a member's internet gateway)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..client import ApiError
from ..errors import CliError
from .context import Context, all_hosts, all_networks, require_changes, resolve
from .output import dash, format_fields, format_table

__all__ = ["gateway_list", "gateway_set", "gateway_show", "gateway_unset", "member_set"]


def _roles(g: Mapping[str, Any]) -> str:
    """What the gateway does, in words: ``remote access, egress, internet``."""
    return ", ".join(w for w, on in (("remote access", g["remote_access"]), ("egress", g["egress"]),
                                     ("internet", g["internet"])) if on)


def _gateway_fields(g: Mapping[str, Any], network: Mapping[str, Any]) -> str:
    endpoint = g["effective_endpoint"] or "-"
    return format_fields([
        ("Gateway", g["name"]), ("Host ID", g["host_id"]),
        ("Network", f"{network['name']} ({network['id']})"),
        ("Addresses", f"{g['ipv4']}, {g['ipv6']}"), ("Roles", _roles(g)),
        ("Remote access", "yes" if g["remote_access"] else "no"), ("Egress", dash(g["egress"])),
        ("Internet", "yes" if g["internet"] else "no"),
        ("Endpoint", endpoint if g["endpoint"] else f"{endpoint} (the host's own)"),
    ])


def _network_and_host(ctx: Context) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    return (resolve(all_networks(ctx), ctx.args.network, "network"),
            resolve(all_hosts(ctx), ctx.args.host, "host"))


def gateway_set(ctx: Context) -> None:
    """``gateway set NETWORK HOST [--remote-access] [--egress CIDR ...] [--internet] [--endpoint]``:
    what is not given stays as it is."""
    a = ctx.args
    body: dict[str, Any] = {}
    if a.remote_access is not None:
        body["remote_access"] = a.remote_access
    if a.egress is not None or a.no_egress:
        body["egress"] = list(a.egress or [])
    if a.internet is not None:
        body["internet"] = a.internet
    if a.endpoint is not None or a.host_endpoint:
        body["endpoint"] = a.endpoint
    require_changes(body, "--remote-access, --egress, --internet or --endpoint (or their --no- forms)")
    network, host = _network_and_host(ctx)
    g = ctx.client.put_gateway(network["id"], host["id"], body)
    if ctx.as_json:
        return ctx.print_json(g)
    ctx.print(f"gateway {g['name']} set in network {network['name']} ({g['host_id']})")
    ctx.print(_gateway_fields(g, network))


def gateway_list(ctx: Context) -> None:
    """``gateway list NETWORK``: one row per gateway."""
    network = resolve(all_networks(ctx), ctx.args.network, "network")
    gateways = ctx.client.list_gateways(network["id"])
    if ctx.as_json:
        return ctx.print_json({"gateways": gateways})
    if not gateways:
        return ctx.print(f"no gateways in network {network['name']}: make one with "
                         "`skymesh gateway set NETWORK HOST --remote-access|--egress CIDR|--internet`")
    ctx.print(format_table(("NAME", "HOST ID", "REMOTE ACCESS", "EGRESS", "INTERNET", "ENDPOINT"), [
        (g["name"], g["host_id"], "yes" if g["remote_access"] else "no", dash(g["egress"]),
         "yes" if g["internet"] else "no", g["effective_endpoint"] or "-") for g in gateways]))


def gateway_show(ctx: Context) -> None:
    """``gateway show NETWORK HOST``: its role, addresses and endpoint."""
    network, host = _network_and_host(ctx)
    g = ctx.client.get_gateway(network["id"], host["id"])
    if ctx.as_json:
        return ctx.print_json(g)
    ctx.print(_gateway_fields(g, network))


def gateway_unset(ctx: Context) -> None:
    """``gateway unset NETWORK HOST [--force]``: the role and every route through it go; while
    clients or hosts use it only with ``--force``."""
    network, host = _network_and_host(ctx)
    try:
        ctx.client.delete_gateway(network["id"], host["id"], force=ctx.args.force)
    except ApiError as e:
        if e.code != "gateway_in_use":
            raise
        raise CliError(e.message.replace(", or pass force=true", ""),
                       hint="pass --force to remove it anyway (its clients stay, unserved; hosts stop "
                            "using it as their internet gateway)") from None
    if not ctx.as_json:
        ctx.print(f"gateway {host['name']} unset in network {network['name']} ({host['id']})")


def member_set(ctx: Context) -> None:
    """``member set NETWORK HOST [--internet-gateway HOST|auto|none] [--full-tunnel|--split-tunnel]
    [--pin CIDR=HOST|auto ...]``."""
    a = ctx.args
    body: dict[str, Any] = {}
    if a.full_tunnel is not None:
        body["full_tunnel"] = a.full_tunnel
    if a.internet_gateway is not None:
        body["internet_gateway"] = a.internet_gateway
    pins: dict[str, str] = {}
    for pin in a.pin:
        prefix, eq, gateway = pin.partition("=")
        if not eq or not prefix or not gateway:
            raise CliError(f"--pin {pin}: write it as CIDR=HOST (or CIDR=auto)")
        pins[prefix] = gateway
    if pins:
        body["pinned"] = pins
    require_changes(body, "--internet-gateway HOST|auto|none, --full-tunnel, --split-tunnel or "
                          "--pin CIDR=HOST")
    network = resolve(all_networks(ctx), a.network, "network")
    hosts = all_hosts(ctx)
    host = resolve(hosts, a.host, "host")
    if a.internet_gateway is not None:
        choice = a.internet_gateway.lower()
        body["internet_gateway"] = (None if choice == "none" else "auto" if choice == "auto"
                                    else resolve(hosts, a.internet_gateway, "host")["id"])
    if pins:
        body["pinned"] = {p: None if g.lower() == "auto" else resolve(hosts, g, "host")["id"]
                          for p, g in pins.items()}
    m = ctx.client.update_member(network["id"], host["id"], body)
    if ctx.as_json:
        return ctx.print_json(m)
    names = {h["id"]: h["name"] for h in hosts}
    uses = m["internet_gateway"]
    ctx.print(f"member {m['name']} updated in network {network['name']} ({m['host_id']})")
    ctx.print(format_fields([
        ("Internet gateway", "none" if uses is None else "auto (any internet gateway)" if uses == "auto"
         else f"{names.get(uses, uses)} ({uses})"),
        ("Tunnel", "full (all traffic)" if m["full_tunnel"] else "split (network and egress ranges)"),
        *((f"Gateway for {p}", f"{names.get(g, g)} ({g}), pinned") for p, g in sorted(m["pinned"].items())),
        *((f"Gateway for {p}", f"{names.get(g, g)} ({g}), placed by failover")
          for p, g in sorted(m["placed"].items()) if p not in m["pinned"]),
    ]))
