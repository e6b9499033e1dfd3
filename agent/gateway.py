"""Our nftables table: a gateway's forwarding and masquerading, and a full tunnel's marks.

A host that is a gateway (:attr:`~chalicelib.domain.device.DeviceConfig.forwards` non-empty)
forwards between the tunnel and its other interfaces, and masquerades what arrives from the
tunnel for its egress ranges or, as an internet gateway, for anywhere
(:attr:`~chalicelib.domain.device.DeviceConfig.nat`). :class:`Forwarding` makes that so with

- one table ``inet skymesh_<ifname>`` (IPv4 and IPv6 NAT in one inet table: nft ≥ 1.0),
  built by :func:`ruleset` as a document of nftables' JSON API and replaced in one
  ``nft -j -f -`` transaction (add + delete + the new table), so it never half applies;
  no other table is read or touched;
- ``net.ipv4.ip_forward`` and ``net.ipv6.conf.all.forwarding`` on (through ``/proc/sys`` of
  the agent's network namespace). A value it changed is remembered in the state directory
  and put back when the role ends or on ``leave``; a value that was on already is left alone.

Postrouting does not know the interface a packet came in on, so the forward chain marks
packets arriving from the tunnel with one bit (:data:`MARK`) for the nat chain to see, and a
postrouting chain right after NAT clears it again: the bit lives only inside our table's path.

A host in full tunnel (:mod:`agent.fulltunnel`) gets, in the same table, what wg-quick adds
beside its rules: the tunnel's own UDP flows keep their mark in conntrack and get it back
on the way in, and ``net.ipv4.conf.all.src_valid_mark`` is on, so a strict reverse-path
filter looks their source up on the main table (without it, an internet gateway reached by
the default route would have its packets dropped); and packets for the tunnel's addresses
that arrive on another interface from a non-local source are dropped (the reverse-path
filter no longer stops such spoofing once everything routes into the tunnel).
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .netconf import NetConfError
from .state import write_private

__all__ = ["Forwarding", "ruleset", "table_name", "run_nft", "nft_tables", "MARK", "SYSCTLS",
           "SRC_VALID_MARK"]

MARK = 0x01000000  # one bit of the packet mark, set in forward, read by NAT, cleared after it
NFT_TIMEOUT = 10.0
SYSCTLS = ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding")
SRC_VALID_MARK = "net/ipv4/conf/all/src_valid_mark"


def table_name(ifname: str) -> str:
    """Our table for interface ``ifname``: ``skymesh_<ifname>`` (other characters as ``_``)."""
    return "skymesh_" + re.sub(r"[^A-Za-z0-9_]", "_", ifname)


def _split(prefixes: Iterable[str]) -> dict[str, list[Any]]:
    """Prefixes by nft family (``ip``/``ip6``) as set elements; ``None`` for a family that has
    a /0 (any address: matched by family alone)."""
    out: dict[str, list[Any]] = {"ip": [], "ip6": []}
    anywhere: set[str] = set()
    nets = [ipaddress.ip_network(p, strict=False) for p in prefixes]
    # an interval set refuses overlapping elements (two networks' ranges may nest): merge them
    merged: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [
        *ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv4Network)),
        *ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv6Network))]
    for p in merged:
        fam = "ip" if p.version == 4 else "ip6"
        if p.prefixlen == 0:
            anywhere.add(fam)
        elif p.prefixlen == p.max_prefixlen:
            out[fam].append(str(p.network_address))
        else:
            out[fam].append({"prefix": {"addr": str(p.network_address), "len": p.prefixlen}})
    return {fam: ([] if fam in anywhere else elems) for fam, elems in out.items()
            if elems or fam in anywhere}


def _match_addr(fam: str, field: str, elems: list[Any]) -> list[dict[str, Any]]:
    """``ip daddr { … }`` (or only ``meta nfproto ipv4`` when ``elems`` is empty: anywhere)."""
    if not elems:
        return [{"match": {"op": "==", "left": {"meta": {"key": "nfproto"}},
                           "right": "ipv4" if fam == "ip" else "ipv6"}}]
    return [{"match": {"op": "==", "left": {"payload": {"protocol": fam, "field": field}},
                       "right": {"set": elems}}}]


def _ifname(op: str, key: str, ifname: str) -> dict[str, Any]:
    return {"match": {"op": op, "left": {"meta": {"key": key}}, "right": ifname}}


def ruleset(ifname: str, forwards: Sequence[str], nat: Sequence[str], *, full_tunnel_mark: int = 0,
            addresses: Sequence[str] = (), groups: Sequence[str] = ()) -> dict[str, Any]:
    """The ``nft -j -f`` document that replaces our table with the one for these ranges and, with
    ``full_tunnel_mark``, the full tunnel of the interface's ``addresses`` (with none of them,
    it only removes the table). Pure; the table it makes::

        table inet skymesh_IF {
          chain forward { type filter hook forward priority filter; policy accept;
            iifname IF meta mark set meta mark | MARK          (when there is NAT)
            iifname IF ip daddr { forwards } accept            (and ip6)
            oifname IF ip saddr { forwards } accept }          (and ip6)
          chain postrouting { type nat hook postrouting priority srcnat; policy accept;
            meta mark & MARK == MARK oifname != IF ip daddr { nat } masquerade }   (and ip6)
          chain unmark { type filter hook postrouting priority srcnat + 1; policy accept;
            meta mark & MARK == MARK meta mark set meta mark & ~MARK }
          chain preraw { type filter hook prerouting priority raw; policy accept;      (full tunnel)
            iifname != IF ip daddr ADDRESS fib saddr type != local drop }         (each address)
          chain premangle { type filter hook prerouting priority mangle; policy accept;
            meta l4proto udp ct mark T meta mark set ct mark }
          chain postmangle { type filter hook postrouting priority mangle; policy accept;
            meta l4proto udp meta mark T ct mark set meta mark }
        }

    ``groups``: the group interfaces of the gateway groups this host is the active member of
    (issue 11): their clients are forwarded like the tunnel's (each rule of ``IF`` above again with
    the group interface, and never masqueraded on their way into it).
    """
    table = {"family": "inet", "name": table_name(ifname)}
    where = {"family": "inet", "table": table_name(ifname)}  # how chains and rules name their table
    cmds: list[dict[str, Any]] = [{"metainfo": {"json_schema_version": 1}},
                                  {"add": {"table": dict(table)}}, {"delete": {"table": dict(table)}}]
    if not forwards and not nat and not full_tunnel_mark:
        return {"nftables": cmds}
    cmds.append({"add": {"table": dict(table)}})

    def chain(name: str, kind: str, hook: str, prio: int) -> None:
        cmds.append({"add": {"chain": {**where, "name": name, "type": kind, "hook": hook, "prio": prio,
                                       "policy": "accept"}}})

    def rule(chain_name: str, *expr: dict[str, Any]) -> None:
        cmds.append({"add": {"rule": {**where, "chain": chain_name, "expr": list(expr)}}})

    mark = {"meta": {"key": "mark"}}
    if full_tunnel_mark:
        ct_mark = {"ct": {"key": "mark"}}
        udp = {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "udp"}}
        chain("preraw", "filter", "prerouting", -300)
        for a in addresses:
            ip = ipaddress.ip_interface(a).ip
            rule("preraw", _ifname("!=", "iifname", ifname),
                 {"match": {"op": "==", "left": {"payload": {"protocol": "ip" if ip.version == 4 else "ip6",
                                                             "field": "daddr"}}, "right": str(ip)}},
                 {"match": {"op": "!=", "left": {"fib": {"flags": ["saddr"], "result": "type"}},
                            "right": "local"}},
                 {"drop": None})
        chain("premangle", "filter", "prerouting", -150)
        rule("premangle", udp, {"match": {"op": "==", "left": ct_mark, "right": full_tunnel_mark}},
             {"mangle": {"key": mark, "value": ct_mark}})
        chain("postmangle", "filter", "postrouting", -150)
        rule("postmangle", udp, {"match": {"op": "==", "left": mark, "right": full_tunnel_mark}},
             {"mangle": {"key": ct_mark, "value": mark}})
    if not forwards and not nat:
        return {"nftables": cmds}
    chain("forward", "filter", "forward", 0)
    tunnels = (ifname, *groups)
    if nat:
        for t in tunnels:
            rule("forward", _ifname("==", "iifname", t),
                 {"mangle": {"key": mark, "value": {"|": [mark, MARK]}}})
    for fam, elems in _split(forwards).items():
        for t in tunnels:
            rule("forward", _ifname("==", "iifname", t), *_match_addr(fam, "daddr", elems), {"accept": None})
            rule("forward", _ifname("==", "oifname", t), *_match_addr(fam, "saddr", elems), {"accept": None})
    if nat:
        marked = {"match": {"op": "==", "left": {"&": [mark, MARK]}, "right": MARK}}
        chain("postrouting", "nat", "postrouting", 100)
        for fam, elems in _split(nat).items():
            rule("postrouting", marked, *(_ifname("!=", "oifname", t) for t in tunnels),
                 *_match_addr(fam, "daddr", elems), {"masquerade": None})
        chain("unmark", "filter", "postrouting", 101)
        rule("unmark", marked, {"mangle": {"key": mark, "value": {"&": [mark, ~MARK & 0xFFFFFFFF]}}})
    return {"nftables": cmds}


def run_nft(args: list[str], stdin: str | None = None, *, nft: str = "nft", who: str = "nft",
            purpose: str = "this host") -> str:
    """``nft ARGS`` (``stdin`` fed to it) in the caller's network namespace; its output.

    Raises :class:`NetConfError` starting with ``who`` when nft is missing (saying ``purpose``
    needs it), hangs or refuses.
    """
    exe = shutil.which(nft)
    if exe is None:
        raise NetConfError(f"{who}: {purpose}, which needs nftables, but {nft!r} is not installed "
                           "(install nftables)")
    try:
        proc = subprocess.run([exe, *args], input=stdin, capture_output=True, text=True, timeout=NFT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise NetConfError(f"{who}: nft did not answer within {NFT_TIMEOUT:g} s") from None
    if proc.returncode != 0:
        raise NetConfError(f"{who}: nft {' '.join(args)} failed: "
                           f"{(proc.stderr or proc.stdout).strip()[-500:] or f'exit {proc.returncode}'}")
    return proc.stdout


def nft_tables(family: str = "inet", *, nft: str = "nft", who: str = "nft") -> set[str]:
    """The names of the nftables tables of ``family`` there are now."""
    out = json.loads(run_nft(["-j", "list", "tables", family], nft=nft, who=who) or "{}")
    return {t["table"]["name"] for t in out.get("nftables", ()) if "table" in t}


class Forwarding:
    """Our table for interface ``ifname``: a gateway's forwarding and NAT, a full tunnel's marks.

    ``memo`` is the file (in the agent's state directory) that remembers what we changed:
    whether our table exists, and the sysctls' values before we turned them on.
    """

    def __init__(self, ifname: str, memo: Path, *, nft: str = "nft", sysctl_root: Path = Path("/proc/sys"),
                 ) -> None:
        self.ifname = ifname
        self.memo = Path(memo)
        self.nft = nft
        self.sysctl_root = sysctl_root
        self._applied: dict[str, Any] | None = None  # the last document applied by this object

    def __repr__(self) -> str:
        return f"Forwarding({self.ifname})"

    # --- memo ------------------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        try:
            d = json.loads(self.memo.read_text())
        except (FileNotFoundError, ValueError):
            return {"table": False, "sysctls": {}}
        return {"table": bool(d.get("table")), "sysctls": dict(d.get("sysctls") or {})}

    def _save(self, memo: dict[str, Any]) -> None:
        if not memo["table"] and not memo["sysctls"]:
            self.memo.unlink(missing_ok=True)
            return
        write_private(self.memo, json.dumps(memo, sort_keys=True))

    # --- nft and sysctl ----------------------------------------------------------------------
    def _nft(self, args: list[str], stdin: str | None = None) -> str:
        return run_nft(args, stdin, nft=self.nft, who=self.ifname,
                       purpose="this host is a gateway or in full tunnel")

    def _table_exists(self) -> bool:
        return table_name(self.ifname) in nft_tables("inet", nft=self.nft, who=self.ifname)

    def _sysctl(self, key: str) -> str | None:
        """The value now; None when the host does not have it (IPv6 disabled)."""
        try:
            return (self.sysctl_root / key).read_text().strip()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise NetConfError(f"{self.ifname}: cannot read {key.replace('/', '.')}: "
                               f"{e.strerror or e}") from None

    def _set_sysctl(self, key: str, value: str) -> None:
        try:
            (self.sysctl_root / key).write_text(value + "\n")
        except OSError as e:
            raise NetConfError(f"{self.ifname}: cannot set {key.replace('/', '.')} = {value}: "
                               f"{e.strerror or e}") from None

    # --- the role ----------------------------------------------------------------------------
    def apply(self, forwards: Sequence[str], nat: Sequence[str], *, full_tunnel_mark: int = 0,
              addresses: Sequence[str] = (), groups: Sequence[str] = ()) -> bool:
        """Forward ``forwards``, masquerade for ``nat``, and keep the full tunnel's ``full_tunnel_mark``
        (0: no full tunnel) for the interface's ``addresses``; ``groups``: the active group interfaces
        forwarded like the tunnel (:func:`ruleset`); none of them: undo what we did.
        True when something changed. Raises :class:`NetConfError`."""
        if not forwards and not nat and not full_tunnel_mark:
            return self.clear()
        memo = self._load()
        doc = ruleset(self.ifname, forwards, nat, full_tunnel_mark=full_tunnel_mark, addresses=addresses,
                      groups=groups)
        changed = False
        if doc != self._applied or not self._table_exists():
            memo["table"] = True  # before: a crash in between leaves a memo that makes `leave` look
            self._save(memo)
            self._nft(["-j", "-f", "-"], json.dumps(doc))
            self._applied = doc
            changed = True
        want = (SYSCTLS if forwards or nat else ()) + ((SRC_VALID_MARK,) if full_tunnel_mark else ())
        for key in want:
            before = self._sysctl(key)
            if before is None:
                continue  # IPv6 is disabled on this host: IPv4 alone is forwarded
            if before != "1":
                memo["sysctls"].setdefault(key, before)
                self._save(memo)
                self._set_sysctl(key, "1")
                changed = True
        return self._restore(memo, keep=want) or changed

    def clear(self) -> bool:
        """Remove our table and put back the sysctls we changed; True when something changed."""
        memo = self._load()
        changed = False
        if memo["table"] or self._applied is not None:
            self._nft(["-j", "-f", "-"], json.dumps(ruleset(self.ifname, (), ())))
            self._applied = None
            memo["table"] = False
            self._save(memo)
            changed = True
        return self._restore(memo, keep=()) or changed

    def _restore(self, memo: dict[str, Any], keep: Sequence[str]) -> bool:
        """Put back each sysctl we changed that is no longer wanted; True when one was."""
        changed = False
        for key, value in sorted(memo["sysctls"].items()):
            if key in keep:
                continue
            if self._sysctl(key) == "1":  # someone else may have changed it since: then it is theirs
                self._set_sysctl(key, str(value))
            del memo["sysctls"][key]
            self._save(memo)
            changed = True
        return changed
