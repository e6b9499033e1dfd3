"""A remote-access client's wg-quick file, and its QR code.

The text is rendered by pure code (:func:`render`) from the plan's :class:`~.domain.plan.ClientView`
(the one peer of the file) and the client's record (DNS, scripts, keepalive); only the QR
functions use a third-party library (segno), which is why this module is not in ``domain/``.

What the file must survive, and why it looks the way it does:

- ``wg-quick strip`` and ``wg setconf``: ``wg-quick`` cuts every line at its first ``#``, so
  comments stay on lines of their own and no value we write holds a ``#``; a value with a line
  break would start a line of its own choosing, so such values are refused (:class:`ValueError`).
- A file whose private key the server does not hold keeps a ``PrivateKey`` line with a
  placeholder that is no key: ``wg-quick up`` then stops with "Key is not the correct length
  or format" instead of bringing up an interface without a key, and the comment above it says
  what to paste there.
- QR codes leave out PostUp/PostDown (:func:`without_scripts`): a scanned phone app must not
  be handed shell commands it would not show.
"""

from __future__ import annotations

import io
import re

import segno

from .domain.models import Client
from .domain.plan import ClientView

__all__ = [
    "PRIVATE_KEY_PLACEHOLDER",
    "SCRIPT_KEYS",
    "render",
    "with_private_key",
    "without_scripts",
    "qr_png",
    "qr_svg",
    "qr_terminal",
]

PRIVATE_KEY_PLACEHOLDER = "<paste the private key of this client here>"
SCRIPT_KEYS = ("PreUp", "PostUp", "PreDown", "PostDown")  # run by wg-quick as shell commands
_SCRIPT_LINE = re.compile(rf"^\s*(?:{'|'.join(SCRIPT_KEYS)})\s*=")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _one_line(what: str, value: str) -> str:
    """``value`` for a ``Key = value`` line; ValueError when it would break out of its line."""
    if "\n" in value or "\r" in value or "#" in value:
        raise ValueError(f"{what} must be one line without '#' (wg-quick cuts lines at '#'): {value!r}")
    return value


def _label(text: str) -> str:
    """A free text (a name) made safe for a comment: control characters become spaces."""
    return _CONTROL.sub(" ", text).strip()


def render(view: ClientView, client: Client, private_key: str | None) -> str:
    """The client's wg-quick file (``[Interface]`` and its gateway as the one ``[Peer]``).

    ``private_key`` is the client's private key when the server made the key pair for this
    one response; None otherwise: the ``PrivateKey`` line then holds
    :data:`PRIVATE_KEY_PLACEHOLDER` and a comment says the server does not hold the key and
    where it goes. DNS, PostUp/PostDown and Endpoint lines appear only when set;
    PersistentKeepalive only when not 0.

    Raises ValueError when a value would not stay on its own line (line breaks, ``#``).

    >>> from .domain.ids import ClientId, HostId, NetworkId
    >>> v = ClientView(NetworkId("net_a"), ("100.64.0.9/32", "fd00::9/128"), 1420, HostId("host_g"),
    ...                "GWKEY=", "198.18.0.1:51820", ("100.64.0.0/16", "fd00::/64"))
    >>> c = Client(ClientId("cli_a"), NetworkId("net_a"), "phone", "PUB=", "100.64.0.9", "fd00::9",
    ...            HostId("host_g"))
    >>> print(render(v, c, "PRIV="))
    # skymesh remote-access client "phone" (cli_a) of network net_a
    [Interface]
    Address = 100.64.0.9/32, fd00::9/128
    PrivateKey = PRIV=
    MTU = 1420
    <BLANKLINE>
    [Peer]
    # gateway host_g
    PublicKey = GWKEY=
    AllowedIPs = 100.64.0.0/16, fd00::/64
    Endpoint = 198.18.0.1:51820
    PersistentKeepalive = 25
    <BLANKLINE>
    """
    lines = [f'# skymesh remote-access client "{_label(client.name)}" ({client.id}) '
             f"of network {view.network_id}",
             "[Interface]",
             f"Address = {', '.join(view.addresses)}"]
    if private_key is None:
        lines += ["# The server does not hold this client's private key. Replace the placeholder below",
                  "# with the private key whose public key is registered for this client",
                  f"# ({client.public_key}), e.g. the output of `wg genkey` on the device that made it.",
                  f"PrivateKey = {PRIVATE_KEY_PLACEHOLDER}"]
    else:
        lines.append(f"PrivateKey = {_one_line('the private key', private_key)}")
    lines.append(f"MTU = {view.mtu}")
    if client.dns:
        lines.append(f"DNS = {', '.join(_one_line('a DNS server', d) for d in client.dns)}")
    if client.post_up:
        lines.append(f"PostUp = {_one_line('PostUp', client.post_up)}")
    if client.post_down:
        lines.append(f"PostDown = {_one_line('PostDown', client.post_down)}")
    lines += ["",
              "[Peer]",
              f"# gateway {view.gateway}",
              f"PublicKey = {view.public_key}",
              f"AllowedIPs = {', '.join(view.allowed_ips)}"]
    if view.endpoint:
        lines.append(f"Endpoint = {_one_line('the endpoint', view.endpoint)}")
    if client.keepalive:
        lines.append(f"PersistentKeepalive = {client.keepalive}")
    return "\n".join(lines) + "\n"


def with_private_key(text: str, private_key: str) -> str:
    """A file :func:`render` made without the private key, with ``private_key`` in place of
    its placeholder and without the comment above it that says where the key goes (what the
    CLI does with the key pair it made on the admin's machine).

    Raises ValueError when ``text`` has no placeholder line.
    """
    lines = text.splitlines(keepends=True)
    marker = f"PrivateKey = {PRIVATE_KEY_PLACEHOLDER}"
    at = next((i for i, line in enumerate(lines) if line.rstrip("\n") == marker), None)
    if at is None:
        raise ValueError("the file has no private key placeholder")
    start = at
    while start > 0 and lines[start - 1].startswith("#") and not lines[start - 1].startswith("# skymesh"):
        start -= 1
    return "".join([*lines[:start], f"PrivateKey = {_one_line('the private key', private_key)}\n",
                    *lines[at + 1:]])


def without_scripts(text: str) -> str:
    """``text`` without its PreUp/PostUp/PreDown/PostDown lines (what a QR code carries)."""
    return "".join(line for line in text.splitlines(keepends=True) if not _SCRIPT_LINE.match(line))


def _qr(text: str) -> segno.QRCode:
    # UTF-8 in byte mode: what phone apps decode a config file with (segno would pick Latin-1
    # for text that fits it, which readers show differently for names with accents).
    return segno.make(without_scripts(text), micro=False, encoding="utf-8")


def qr_png(text: str, scale: int = 6) -> bytes:
    """A PNG QR code of ``text`` less its PostUp/PostDown lines (:func:`without_scripts`)."""
    out = io.BytesIO()
    _qr(text).save(out, kind="png", scale=scale)
    return out.getvalue()


def qr_svg(text: str, scale: int = 6) -> bytes:
    """An SVG QR code (UTF-8 XML) of ``text`` less its PostUp/PostDown lines, dark on white."""
    out = io.BytesIO()
    # A white background of its own (segno's SVG is transparent by default): on a dark page
    # or in a dark-mode viewer a transparent code cannot be scanned.
    _qr(text).save(out, kind="svg", scale=scale, light="white")
    return out.getvalue()


def qr_terminal(text: str) -> str:
    """The QR code of ``text`` less its PostUp/PostDown lines, drawn with block characters for a
    terminal (two modules per character row)."""
    out = io.StringIO()
    _qr(text).terminal(out=out, compact=True)
    return out.getvalue()
