"""``skymesh group create|list|show|add|remove|priority|rotate-key|delete`` (issue 11): HA gateway
groups, remote-access gateways that share one identity and a floating endpoint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .context import Context, all_hosts, all_networks, resolve
from .output import dash, format_fields, format_table

__all__ = ["group_add", "group_create", "group_delete", "group_list", "group_priority", "group_remove",
           "group_rotate_key", "group_show"]


def _network_and_group(ctx: Context) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    network = resolve(all_networks(ctx), ctx.args.network, "network")
    return network, resolve(ctx.client.list_groups(network["id"]), ctx.args.group, "gateway group")


def _host_ids(ctx: Context, refs: list[str]) -> list[str]:
    hosts = all_hosts(ctx)
    return [resolve(hosts, h, "host")["id"] for h in refs]


def _fields(g: Mapping[str, Any], names: Mapping[str, str]) -> str:
    key = g.get("key") or {}
    return format_fields([
        ("Group", g["name"]), ("Group ID", g["id"]),
        ("Members", ", ".join(f"{names.get(h, h)} ({h})" for h in g["members"]) + " (priority order)"),
        ("Floating endpoint", g["floating_endpoint"]),
        ("Active", "-" if g["active"] is None
         else f"{names.get(g['active'], g['active'])} (epoch {g['epoch']})"),
        ("Public key", g["public_key"] or "- (no member made the key yet)"),
        ("Key version", str(g["key_version"])),
        ("Key pending", dash(key.get("pending", []))),
        ("Still know the key", dash(key.get("still_know", []))),
    ])


def _names(ctx: Context) -> dict[str, str]:
    return {h["id"]: h["name"] for h in all_hosts(ctx)}


def group_create(ctx: Context) -> None:
    """``group create NETWORK NAME --member HOST... --floating ADDR:PORT``: members in priority order."""
    a = ctx.args
    network = resolve(all_networks(ctx), a.network, "network")
    g = ctx.client.create_group(network["id"], {"name": a.name, "members": _host_ids(ctx, a.member),
                                                "floating_endpoint": a.floating})
    if ctx.as_json:
        return ctx.print_json(g)
    ctx.print(f"gateway group {g['name']} created in network {network['name']} ({g['id']}); its first "
              "member makes the group's key, then clients may name it as their gateway")
    ctx.print(_fields(g, _names(ctx)))


def group_list(ctx: Context) -> None:
    """``group list NETWORK``: one row per group."""
    network = resolve(all_networks(ctx), ctx.args.network, "network")
    groups = ctx.client.list_groups(network["id"])
    if ctx.as_json:
        return ctx.print_json({"groups": groups})
    if not groups:
        return ctx.print(f"no gateway groups in network {network['name']}: make one with `skymesh group "
                         "create NETWORK NAME --member HOST --member HOST --floating ADDR:PORT`")
    names = _names(ctx)
    ctx.print(format_table(("NAME", "GROUP ID", "MEMBERS", "FLOATING", "ACTIVE", "KEY VERSION"), [
        (g["name"], g["id"], ", ".join(names.get(h, h) for h in g["members"]), g["floating_endpoint"],
         "-" if g["active"] is None else names.get(g["active"], g["active"]), str(g["key_version"]))
        for g in groups]))


def group_show(ctx: Context) -> None:
    """``group show NETWORK GROUP``."""
    _, g = _network_and_group(ctx)
    if ctx.as_json:
        return ctx.print_json(g)
    ctx.print(_fields(g, _names(ctx)))


def _patched(ctx: Context, body: dict[str, Any]) -> None:
    network, g = _network_and_group(ctx)
    out = ctx.client.update_group(network["id"], g["id"], body)
    if ctx.as_json:
        return ctx.print_json(out)
    for r in out["removed"]:
        ctx.print(r["message"])
    ctx.print(_fields(out["group"], _names(ctx)))


def group_add(ctx: Context) -> None:
    """``group add NETWORK GROUP HOST...``: new members, last in priority."""
    _patched(ctx, {"add": _host_ids(ctx, ctx.args.hosts)})


def group_remove(ctx: Context) -> None:
    """``group remove NETWORK GROUP HOST...``: says whether each still knows the group's key."""
    _patched(ctx, {"remove": _host_ids(ctx, ctx.args.hosts)})


def group_priority(ctx: Context) -> None:
    """``group priority NETWORK GROUP HOST...``: every member, first = preferred."""
    _patched(ctx, {"priority": _host_ids(ctx, ctx.args.hosts)})


def group_rotate_key(ctx: Context) -> None:
    """``group rotate-key NETWORK GROUP``: a member makes a new key; clients then need its public key."""
    network, g = _network_and_group(ctx)
    out = ctx.client.rotate_group_key(network["id"], g["id"])
    if ctx.as_json:
        return ctx.print_json(out)
    ctx.print(out["message"])


def group_delete(ctx: Context) -> None:
    """``group delete NETWORK GROUP`` (refused while clients name it)."""
    network, g = _network_and_group(ctx)
    ctx.client.delete_group(network["id"], g["id"])
    if not ctx.as_json:
        ctx.print(f"gateway group {g['name']} deleted in network {network['name']} ({g['id']})")
