"""``skymesh host list|show|update|delete``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .context import Context, all_hosts, all_networks, network_names, require_changes, resolve
from .output import dash, format_fields, format_table, human_bytes, human_duration, relative_time

__all__ = ["host_delete", "host_list", "host_show", "host_update"]


def _status(host: Mapping[str, Any]) -> str:
    return "online" if host["status"]["online"] else "offline"


def host_list(ctx: Context) -> None:
    """``host list``: one row per host with its networks, addresses and liveness."""
    hosts = all_hosts(ctx)
    if ctx.listed_alone("hosts", hosts, "no hosts yet: enroll one with a key from `skymesh key create`"):
        return
    networks = all_networks(ctx)
    rows = [(h["name"], h["id"],
             dash(network_names((a["network_id"] for a in h["addresses"]), networks)),
             dash(a["ipv4"] for a in h["addresses"]), _status(h),
             relative_time(h["status"]["last_seen"], ctx.now), relative_time(h["created_at"], ctx.now))
            for h in hosts]
    ctx.print(format_table(("NAME", "ID", "NETWORKS", "IPV4", "STATUS", "LAST SEEN", "CREATED"), rows))


def _host_details(host: Mapping[str, Any], ctx: Context, networks: Sequence[Mapping[str, Any]],
                  hosts: Sequence[Mapping[str, Any]]) -> str:
    st = host["status"]
    blocks = [format_fields([
        ("Name", host["name"]), ("ID", host["id"]), ("Status", _status(host)),
        ("Last seen", relative_time(st["last_seen"], ctx.now)),
        ("Agent", st["agent_version"] or "-"),
        ("Public key", host["wg_public_key"]), ("Listen port", host["listen_port"]),
        ("Endpoints", dash(host["endpoints"])),
        ("Observed", host["observed_endpoint"] or "-"),
        ("Reported", dash(st["reported_endpoints"])),
        ("Tags", dash(host["tags"])), ("Enrolled by", host["enrollment_key_id"] or "-"),
        ("Created", f"{relative_time(host['created_at'], ctx.now)} ({host['created_at']})"),
    ])]
    if host["addresses"]:
        names = network_names((a["network_id"] for a in host["addresses"]), networks)
        blocks.append(format_table(("NETWORK", "ID", "IPV4", "IPV6"), [
            (name, a["network_id"], a["ipv4"], a["ipv6"])
            for name, a in zip(names, host["addresses"], strict=True)]))
    if st["peers"]:
        by_key = {h["wg_public_key"]: h["name"] for h in hosts}
        blocks.append(format_table(("PEER", "PUBLIC KEY", "HANDSHAKE", "RX", "TX"), [
            (by_key.get(p["public_key"], "?"), p["public_key"],
             "never" if p["latest_handshake_age"] is None
             else f"{human_duration(p['latest_handshake_age'])} ago",
             human_bytes(p["rx_bytes"]), human_bytes(p["tx_bytes"])) for p in st["peers"]]))
    return "\n\n".join(blocks)


def host_show(ctx: Context) -> None:
    """``host show ID|NAME``: its settings, addresses in each network, and peers as it reported them."""
    hosts = all_hosts(ctx)
    ref = resolve(hosts, ctx.args.host, "host")
    host = ctx.client.get_host(ref["id"])
    if ctx.as_json:
        return ctx.print_json(host)
    ctx.print(_host_details(host, ctx, all_networks(ctx), hosts))


def host_update(ctx: Context) -> None:
    """``host update ID|NAME [--name] [--endpoint ...] [--listen-port] [--tag ...]``."""
    a = ctx.args
    body: dict[str, Any] = {}
    if a.new_name is not None:
        body["name"] = a.new_name
    if a.listen_port is not None:
        body["listen_port"] = a.listen_port
    if a.endpoint is not None or a.no_endpoints:
        body["endpoints"] = list(a.endpoint or [])
    if a.tag is not None or a.no_tags:
        body["tags"] = list(a.tag or [])
    require_changes(body, "--name, --endpoint, --no-endpoints, --listen-port, --tag or --no-tags")
    ref = resolve(all_hosts(ctx), a.host, "host")
    ctx.changed("host", ctx.client.update_host(ref["id"], body), "updated")


def host_delete(ctx: Context) -> None:
    """``host delete ID|NAME``: it leaves every network and its certificate is revoked."""
    ref = resolve(all_hosts(ctx), ctx.args.host, "host")
    ctx.client.delete_host(ref["id"])
    if not ctx.as_json:
        ctx.print(f"host {ref['name']} deleted ({ref['id']})")
