"""``skymesh relay set|list|delete`` (issue 10): members that relay hosts that cannot be reached directly."""

from __future__ import annotations

from .context import Context, all_hosts, all_networks, resolve
from .output import format_table

__all__ = ["relay_delete", "relay_list", "relay_set"]


def relay_set(ctx: Context) -> None:
    """``relay set NETWORK RELAY HOST...``: RELAY relays exactly these hosts."""
    network = resolve(all_networks(ctx), ctx.args.network, "network")
    hosts = all_hosts(ctx)
    relay = resolve(hosts, ctx.args.relay, "host")
    relayed = [resolve(hosts, h, "host")["id"] for h in ctx.args.hosts]
    r = ctx.client.put_relay(network["id"], relay["id"], relayed)
    if ctx.as_json:
        return ctx.print_json(r)
    names = ", ".join(f"{m['name']} ({m['host_id']})" for m in r["relayed"])
    ctx.print(f"{r['name']} ({r['host_id']}) relays {len(r['relayed'])} hosts in network {network['name']}: "
              f"{names}")


def relay_list(ctx: Context) -> None:
    """``relay list NETWORK``: one row per relayed host, with its relay; then one row per pair
    relayed automatically, with its via."""
    network = resolve(all_networks(ctx), ctx.args.network, "network")
    body = ctx.client.relays(network["id"])
    relays, pairs = body["relays"], body.get("pairs", [])
    if ctx.as_json:
        return ctx.print_json(body)
    if not relays and not pairs:
        return ctx.print(f"no relays in network {network['name']}: make one with "
                         "`skymesh relay set NETWORK RELAY HOST...`")
    if relays:
        ctx.print(format_table(("RELAY", "RELAY ID", "RELAYED", "RELAYED ID", "IPV4"), [
            (r["name"], r["host_id"], m["name"], m["host_id"], m["ipv4"])
            for r in relays for m in r["relayed"]]))
    if pairs:
        ctx.print(("\n" if relays else "") + "relayed automatically (pairs without a direct path):")
        ctx.print(format_table(("HOST", "HOST ID", "PEER", "PEER ID", "VIA", "VIA ID"), [
            (p["a"]["name"], p["a"]["host_id"], p["b"]["name"], p["b"]["host_id"], p["via"]["name"],
             p["via"]["host_id"]) for p in pairs]))


def relay_delete(ctx: Context) -> None:
    """``relay delete NETWORK RELAY``: the hosts it relays go direct again."""
    network = resolve(all_networks(ctx), ctx.args.network, "network")
    relay = resolve(all_hosts(ctx), ctx.args.relay, "host")
    ctx.client.delete_relay(network["id"], relay["id"])
    if not ctx.as_json:
        ctx.print(f"relay {relay['name']} deleted in network {network['name']}: its hosts go direct again")
