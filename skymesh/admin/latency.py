"""``skymesh latency NETWORK`` (issue 10: probes): the network's latency matrix as a table."""

from __future__ import annotations

from .context import Context, all_hosts, all_networks, resolve
from .output import format_table, human_duration

__all__ = ["latency_show"]


def latency_show(ctx: Context) -> None:
    """One row per (from, to) pair a member measured: RTT, loss, up or DOWN, and the report's age."""
    network = resolve(all_networks(ctx), ctx.args.network, "network")
    matrix = ctx.client.latency(network["id"])
    if ctx.as_json:
        return ctx.print_json(matrix)
    if not matrix["rows"]:
        return ctx.print(f"no latency reported in network {network['name']} yet: agents probe the "
                         "gateways they use, and report within a few seconds of a gateway being set")
    names = {h["id"]: h["name"] for h in all_hosts(ctx)}
    rows = sorted(((names.get(r["from"], r["from"]), names.get(r["to"], r["to"]), r) for r in matrix["rows"]),
                  key=lambda x: (x[0], x[1]))
    ctx.print(format_table(("FROM", "", "TO", "RTT", "LOSS", "UP", "AGE"), [
        (src, "→", dst, "-" if r["rtt_ms"] is None else f"{r['rtt_ms']:.1f} ms", f"{r['loss_pct']}%",
         "up" if r["up"] else "DOWN", human_duration(r["age_s"])) for src, dst, r in rows]))
