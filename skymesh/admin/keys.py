"""``skymesh key create|list|revoke``: enrollment keys."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from ..errors import CliError
from .context import Context, all_hosts, all_keys, all_networks, network_names, resolve
from .output import dash, format_table, parse_api_time, relative_time

__all__ = ["key_create", "key_list", "key_revoke"]


def _key_status(key: Mapping[str, Any], now: dt.datetime) -> str:
    if key["revoked"]:
        return "revoked"
    if key["usable"]:
        return "usable"
    expires = parse_api_time(key["expires_at"])
    if expires is not None and expires <= now:
        return "expired"
    if key["uses_left"] == 0:
        return "used up"
    return "unusable"


def _key_uses(key: Mapping[str, Any]) -> str:
    if key["uses_total"] is None:
        return "unlimited"
    return f"{key['uses_left']}/{key['uses_total']} left"


def _key_expiry(key: Mapping[str, Any], now: dt.datetime) -> str:
    expires = parse_api_time(key["expires_at"])
    if expires is None:
        return "never"
    text = relative_time(expires, now)
    return f"expired {text}" if expires <= now else text


def key_create(ctx: Context) -> None:
    """``key create --network ID|NAME ...``: prints the new key's token, which is shown only once."""
    a = ctx.args
    if a.uses is None and a.expires_in is None and a.expires_at is None and not a.unlimited:
        raise CliError("say how long the key lives: --uses N, --expires-in DURATION, "
                       "--expires-at TIME, or --unlimited")
    if a.unlimited and a.uses is not None:
        raise CliError("--unlimited cannot be combined with --uses")
    networks = all_networks(ctx)
    ids = list(dict.fromkeys(resolve(networks, ref, "network")["id"] for ref in a.network))
    expires_at = None
    if a.expires_in is not None:
        expires = ctx.now + dt.timedelta(seconds=a.expires_in)
        expires_at = expires.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    elif a.expires_at is not None:
        expires_at = a.expires_at.isoformat()
    wanted = getattr(a, "relay", None)  # --relay (issue 10); callers that build args may leave it out
    relay = None if wanted is None else resolve(all_hosts(ctx), wanted, "host")["id"]
    key = ctx.client.create_enrollment_key(ids, uses=a.uses, unlimited=a.unlimited, expires_at=expires_at,
                                           tags=list(a.tag or []), relay=relay)
    if ctx.as_json:
        return ctx.print_json(key)
    ctx.print(f"enrollment key {key['id']} created for {', '.join(network_names(key['networks'], networks))}"
              f" (uses: {_key_uses(key)}; expires: {_key_expiry(key, ctx.now)})"
              + (f"; hosts enrolled with it are relayed by {wanted} ({relay})" if relay else ""))
    ctx.print()
    ctx.print(f"    {key['token']}")
    ctx.print()
    ctx.print("This token is shown only once and cannot be recovered: store it now.")


def key_list(ctx: Context) -> None:
    """``key list``: every enrollment key, without secrets."""
    keys = all_keys(ctx)
    if ctx.listed_alone("enrollment_keys", keys,
                        "no enrollment keys: create one with `skymesh key create --network NAME --uses 1`"):
        return
    networks = all_networks(ctx)
    rows = [(k["id"], ",".join(network_names(k["networks"], networks)), _key_uses(k),
             _key_expiry(k, ctx.now), dash(k["tags"]), _key_status(k, ctx.now),
             relative_time(k["created_at"], ctx.now)) for k in keys]
    ctx.print(format_table(("ID", "NETWORKS", "USES", "EXPIRES", "TAGS", "STATUS", "CREATED"), rows))


def key_revoke(ctx: Context) -> None:
    """``key revoke ID``: the key enrolls no more hosts; those it enrolled stay."""
    ctx.client.revoke_enrollment_key(ctx.args.key_id)
    if not ctx.as_json:
        ctx.print(f"enrollment key {ctx.args.key_id} revoked")
