"""``skymesh client create|list|show|config|qr|enable|disable|rotate-key|delete``.

``create`` and ``rotate-key`` make the client's key pair here, on the admin's machine: the API
is given only the public key, and the private key goes straight into ``NAME.conf`` (mode 0600),
which is the one place it is ever written. Both refuse before calling the API when that file
cannot be written, so a key is never registered whose private half has nowhere to go.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chalicelib import clientfile, wgkeys
from chalicelib.fsutil import write_atomic

from ..errors import CliError
from .context import Context, all_hosts, all_networks, resolve
from .output import dash, format_fields, format_table, human_bytes, relative_time

__all__ = ["client_create", "client_list", "client_show", "client_config", "client_qr", "client_enable",
           "client_disable", "client_rotate_key", "client_delete"]


def _network(ctx: Context) -> Mapping[str, Any]:
    return resolve(all_networks(ctx), ctx.args.network, "network")


def _client(ctx: Context) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    net = _network(ctx)
    return net, resolve(ctx.client.list_clients(net["id"], ctx.page_size), ctx.args.client, "client")


def _conf_path(ctx: Context, name: str) -> Path:
    """Where ``NAME.conf`` goes (``--out DIR``, else here); refused now when it cannot be written."""
    folder = Path(ctx.args.out or ".")
    if not folder.is_dir():
        raise CliError(f"{folder} is not a directory", hint="create it, or give another --out")
    if not os.access(folder, os.W_OK):
        raise CliError(f"cannot write to {folder}", hint="give a directory you may write to with --out")
    return folder / f"{name}.conf"


def _write_file(ctx: Context, net: Mapping[str, Any], client: Mapping[str, Any], pair: wgkeys.KeyPair,
                path: Path) -> str:
    """Fetch the client's file, put its private key in, write it at ``path`` (0600); the text."""
    try:
        text = clientfile.with_private_key(ctx.client.client_config(net["id"], client["id"]).decode(),
                                           pair.private_key)
    except ValueError:
        raise CliError("the API's client file has no private key placeholder; is the API a newer "
                       "version?") from None
    write_atomic(path, text.encode(), 0o600)
    return text


def _finish(ctx: Context, client: Mapping[str, Any], verb: str, path: Path, text: str) -> None:
    if ctx.as_json:
        return ctx.print_json({"client": client, "file": str(path)})
    ctx.print(f"client {client['name']} {verb} ({client['id']}): {client['ipv4']}, {client['ipv6']}")
    ctx.print(f"wrote {path} (mode 0600; it holds the client's private key, which is kept nowhere else)")
    if ctx.args.qr:
        ctx.print(clientfile.qr_terminal(text))


def client_create(ctx: Context) -> None:
    """``client create NETWORK NAME --gateway HOST|GROUP [...]``: the key pair made here, ``NAME.conf``
    written. A gateway group (issue 11) is named by its id (``grp_…``) or name."""
    a = ctx.args
    net = _network(ctx)
    groups = ctx.client.list_groups(net["id"])
    gateway = (resolve(groups, a.gateway, "gateway group")
               if a.gateway.startswith("grp_") or any(g["name"] == a.gateway for g in groups)
               else resolve(all_hosts(ctx), a.gateway, "host"))
    path = _conf_path(ctx, a.name)
    if path.exists():
        raise CliError(f"{path} exists", hint="remove it, or give another --out")
    pair = wgkeys.new_key_pair()
    body: dict[str, Any] = {"name": a.name, "gateway": gateway["id"], "public_key": pair.public_key,
                            "dns": a.dns or [], "extra_addresses": a.extra or [],
                            "full_tunnel": a.full_tunnel}
    body |= {k: v for k, v in (("address", a.address), ("keepalive", a.keepalive), ("post_up", a.post_up),
                               ("post_down", a.post_down)) if v is not None}
    client = ctx.client.create_client(net["id"], body)["client"]
    try:
        text = _write_file(ctx, net, client, pair, path)
    except (CliError, OSError) as e:
        # Its private key exists only in this process: a client nobody can use goes again.
        ctx.client.delete_client(net["id"], client["id"])
        raise CliError(f"{path} could not be written ({e}); the client was removed again",
                       hint="try again") from None
    _finish(ctx, client, "created", path, text)


def client_rotate_key(ctx: Context) -> None:
    """``client rotate-key NETWORK CLIENT``: a new key pair made here; the public key is sent with a
    PATCH and ``NAME.conf`` is written anew (the old key stops working at its gateway)."""
    net, ref = _client(ctx)
    path = _conf_path(ctx, str(ref["name"]))
    pair = wgkeys.new_key_pair()
    client = ctx.client.update_client(net["id"], ref["id"], {"public_key": pair.public_key})
    try:
        text = _write_file(ctx, net, client, pair, path)
    except (CliError, OSError) as e:
        raise CliError(f"the client's key was changed but {path} could not be written ({e}); its old "
                       "file no longer works", hint="run rotate-key again") from None
    _finish(ctx, client, "re-keyed", path, text)


def _handshake(c: Mapping[str, Any], ctx: Context) -> str:
    return relative_time(c["latest_handshake"], ctx.now)


def _state(c: Mapping[str, Any]) -> str:
    if not c["enabled"]:
        return "disabled"
    return "connected" if c["connected"] else "-"


def client_list(ctx: Context) -> None:
    """``client list NETWORK``: one row per client with its gateway and whether it is connected."""
    net = _network(ctx)
    clients = ctx.client.list_clients(net["id"], ctx.page_size)
    if ctx.listed_alone("clients", clients, f"no clients in {net['name']} yet: add one with "
                        "`skymesh client create NETWORK NAME --gateway HOST`"):
        return
    names = {h["id"]: h["name"] for h in all_hosts(ctx)}
    rows = [(c["name"], c["id"], c["ipv4"], names.get(c["gateway"], c["gateway"]), _state(c),
             _handshake(c, ctx), c["endpoint"] or "-", human_bytes(c["rx_bytes"]), human_bytes(c["tx_bytes"]))
            for c in clients]
    ctx.print(format_table(("NAME", "ID", "IPV4", "GATEWAY", "STATE", "HANDSHAKE", "ENDPOINT", "RX", "TX"),
                           rows))


def client_show(ctx: Context) -> None:
    """``client show NETWORK CLIENT``: its settings and its link as its gateway last reported it."""
    net, ref = _client(ctx)
    c = ctx.client.get_client(net["id"], ref["id"])
    if ctx.as_json:
        return ctx.print_json(c)
    ctx.print(format_fields([
        ("Name", c["name"]), ("ID", c["id"]), ("Network", f"{net['name']} ({net['id']})"),
        ("State", _state(c)), ("Gateway", c["gateway"]), ("IPv4", c["ipv4"]), ("IPv6", c["ipv6"]),
        ("Public key", c["public_key"]), ("Extra", dash(c["extra_addresses"])), ("DNS", dash(c["dns"])),
        ("Full tunnel", "yes" if c["full_tunnel"] else "no"),
        ("Keepalive", f"{c['keepalive']}s" if c["keepalive"] else "off"),
        ("Handshake", _handshake(c, ctx)), ("Endpoint", c["endpoint"] or "-"),
        ("Received", human_bytes(c["rx_bytes"])), ("Sent", human_bytes(c["tx_bytes"])),
        ("Created", f"{relative_time(c['created_at'], ctx.now)} ({c['created_at']})"),
    ]))


def client_config(ctx: Context) -> None:
    """``client config NETWORK CLIENT``: the file as the API has it (its private key is not there)."""
    net, ref = _client(ctx)
    ctx.out.write(ctx.client.client_config(net["id"], ref["id"]).decode())


def client_qr(ctx: Context) -> None:
    """``client qr NETWORK CLIENT [--file NAME.conf] [--png|--svg PATH]``: the QR code (PostUp/PostDown
    left out) of the local file, which holds the private key, else of the API's file."""
    a = ctx.args
    net, ref = _client(ctx)
    if a.file:
        text = Path(a.file).read_text()
        if f"{ref['ipv4']}/32" not in text:
            raise CliError(f"{a.file} is not the file of client {ref['name']} ({ref['ipv4']})")
    else:
        text = ctx.client.client_config(net["id"], ref["id"]).decode()
        if clientfile.PRIVATE_KEY_PLACEHOLDER in text:
            print("note: the API does not hold this client's private key; give --file NAME.conf for a "
                  "code a device can use", file=sys.stderr)
    if a.png or a.svg:
        target = Path(a.png or a.svg)
        write_atomic(target, clientfile.qr_png(text) if a.png else clientfile.qr_svg(text), 0o600)
        return ctx.print(f"wrote {target}")
    ctx.print(clientfile.qr_terminal(text))


def _set_enabled(ctx: Context, enabled: bool) -> None:
    net, ref = _client(ctx)
    client = ctx.client.update_client(net["id"], ref["id"], {"enabled": enabled})
    ctx.changed("client", client, "enabled" if enabled else "disabled")


def client_enable(ctx: Context) -> None:
    """``client enable NETWORK CLIENT``: its gateway takes its peer again."""
    _set_enabled(ctx, True)


def client_disable(ctx: Context) -> None:
    """``client disable NETWORK CLIENT``: its gateway drops its peer (its file stays valid)."""
    _set_enabled(ctx, False)


def client_delete(ctx: Context) -> None:
    """``client delete NETWORK CLIENT``: gone from its gateway; its addresses are freed."""
    net, ref = _client(ctx)
    ctx.client.delete_client(net["id"], ref["id"])
    if not ctx.as_json:
        ctx.print(f"client {ref['name']} deleted ({ref['id']})")
