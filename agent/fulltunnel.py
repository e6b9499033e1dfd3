"""Full tunnel: all of this host's traffic into the WireGuard interface, the way wg-quick does it.

``wg-quick`` (its ``add_default``) routes everything into the tunnel without a routing loop by
marking the tunnel's own UDP packets (the device's ``fwmark``) and, per address family:

- a table ``T`` (the mark's value) holding only ``default dev <if>``;
- ``ip rule add not fwmark T table T``: every unmarked packet looks up table ``T``;
- ``ip rule add table main suppress_prefixlength 0``, checked first: the main table still
  decides for anything it has a more specific route for than its default route (the LAN,
  a control plane in the same subnet).

The tunnel's own (marked) packets skip table ``T`` and leave by the main table: the underlay
endpoints of every peer stay on main. wg-quick stops there; we also keep the control plane
and the broker on main (``bypass``: one ``to ADDRESS lookup main`` rule each, before the
others), so a host whose internet gateway fails still hears from the control plane, which is
how it learns to stop using that gateway.
:class:`FullTunnel` makes exactly that set, through rtnetlink (pyroute2), and removes exactly
it. The rules and routes it owns carry ``proto static`` (wg-quick's carry none), so rules
someone else made — even identical ones — are never touched. The device's fwmark is the
backend's business (:meth:`agent.wg.base.Backend.set_fwmark`).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .netconf import RT_SCOPE_LINK, RT_TABLE_MAIN, RTPROT_STATIC, NetConfError, _ipr

__all__ = ["FullTunnel", "FULL_TUNNEL_TABLE", "table_for"]

FULL_TUNNEL_TABLE = 51820  # wg-quick's default fwmark and table
FIB_RULE_INVERT = 0x2  # "not" in `ip rule not fwmark …`
FR_ACT_TO_TBL = 1
FAMILIES = (socket.AF_INET, socket.AF_INET6)
_DEFAULT: dict[int, str] = {socket.AF_INET: "0.0.0.0/0", socket.AF_INET6: "::/0"}
_NAMES: dict[int, str] = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}
_RESERVED_TABLES = (0, 253, 254, 255)  # unspec, default, main, local


def table_for(listen_port: int) -> int:
    """The fwmark and table number of the full tunnel: the listen port, as wg-quick's default
    51820 is its own port (a port of 0 or one that names a reserved table: 51820)."""
    return FULL_TUNNEL_TABLE if listen_port in _RESERVED_TABLES else listen_port


@dataclass(frozen=True)
class _Rule:
    family: int
    priority: int
    table: int
    fwmark: int | None  # the "not fwmark T" rule; None: the suppress_prefixlength or a bypass rule
    dst: str | None = None  # a bypass rule: ``to dst lookup main``

    @property
    def is_mark_rule(self) -> bool:
        return self.fwmark is not None


def _rule_of(msg: Any) -> _Rule | None:
    """One of our rules as the kernel lists it; None for any rule we did not make."""
    if msg.get_attr("FRA_PROTOCOL") != RTPROT_STATIC or msg["action"] != FR_ACT_TO_TBL:
        return None
    if msg["src_len"] or msg.get_attr("FRA_IIFNAME") or msg.get_attr("FRA_OIFNAME"):
        return None
    table = msg.get_attr("FRA_TABLE") or msg["table"]
    prio = int(msg.get_attr("FRA_PRIORITY") or 0)
    mark = msg.get_attr("FRA_FWMARK")
    suppress = msg.get_attr("FRA_SUPPRESS_PREFIXLEN")
    unset = (None, 2**32 - 1)  # how the kernel lists "no suppress_prefixlength"
    if msg["dst_len"]:
        full = 32 if msg["family"] == socket.AF_INET else 128
        if (msg["dst_len"] == full and not msg["flags"] & FIB_RULE_INVERT and mark is None
                and table == RT_TABLE_MAIN and suppress in unset and msg.get_attr("FRA_DST")):
            return _Rule(msg["family"], prio, table, None, dst=str(msg.get_attr("FRA_DST")))
        return None
    if msg["flags"] & FIB_RULE_INVERT and mark is not None and mark == table and suppress in unset:
        return _Rule(msg["family"], prio, table, mark)
    if not msg["flags"] & FIB_RULE_INVERT and mark is None and table == RT_TABLE_MAIN and suppress == 0:
        return _Rule(msg["family"], prio, table, None)
    return None


class FullTunnel:
    """wg-quick's policy routing for link ``ifname`` with table and mark ``table`` (in ``netns``)."""

    def __init__(self, ifname: str, table: int = FULL_TUNNEL_TABLE, netns: str | None = None) -> None:
        if table in _RESERVED_TABLES or not 0 < table < 2**32:
            raise ValueError(f"table {table} is reserved or out of range")
        self.ifname = ifname
        self.table = table
        self.netns = netns

    def __repr__(self) -> str:
        return f"FullTunnel({self.ifname}, table {self.table})"

    def _rules(self, ipr: Any, family: int) -> list[_Rule]:
        """Our rules of ``family``: each mark rule of our table, and a suppress rule right before it.

        A suppress rule carries nothing of ours but its place, so another program's rule — or
        another agent's, for another table — is never taken for ours. Ours are removed suppress
        rule first, so an interrupted removal leaves the mark rule that finds it again.
        """
        rules = [r for msg in ipr.get_rules(family=family) if (r := _rule_of(msg))]
        marks = [r for r in rules if r.is_mark_rule and r.table == self.table]
        suppress = {m.priority - 1 for m in marks}
        bypass = {m.priority - 2 for m in marks}
        return [r for r in rules if (r.dst is None and r.priority in suppress and not r.is_mark_rule)
                or (r.dst is not None and r.priority in bypass)] + marks

    @staticmethod
    def _routes(ipr: Any, table: int) -> list[Any]:
        """Our default routes in ``table`` (proto static), of any link."""
        out = []
        for fam in FAMILIES:
            for msg in ipr.get_routes(family=fam, table=table):
                if ((msg.get_attr("RTA_TABLE") or msg["table"]) == table and msg["dst_len"] == 0
                        and msg["proto"] == RTPROT_STATIC):
                    out.append(msg)
        return out

    def apply(self, on: bool, bypass: Sequence[str] = ()) -> bool:
        """Make the full tunnel so (``on``), with the addresses in ``bypass`` kept on the main
        table, or gone; True when something changed.

        Complete and in wg-quick's order (the suppress rule right before the mark rule, the
        bypass rules before both), or rebuilt. Raises :class:`NetConfError` listing what the
        kernel refused.
        """
        from pyroute2.netlink.exceptions import NetlinkError

        errors: list[str] = []
        changed = False
        with _ipr(self.netns) as ipr:
            idx = None
            if on:
                found = ipr.link_lookup(ifname=self.ifname)
                if not found:
                    raise NetConfError(f"interface {self.ifname} does not exist")
                idx = int(found[0])
            wanted = {str(ipaddress.ip_address(a)) for a in bypass}
            for fam in FAMILIES:
                mine = self._rules(ipr, fam)
                want = {a for a in wanted if (":" in a) == (fam == socket.AF_INET6)}
                if on and self._complete(mine):
                    base = next(r.priority for r in mine if r.is_mark_rule) - 2
                    errs, moved = self._sync_bypass(ipr, fam, base, mine, want)
                    errors.extend(errs)
                    changed = changed or moved
                    continue
                for r in mine:  # incomplete, or off: remove (suppress rules first)
                    changed = True
                    if err := self._del_rule(ipr, r):
                        errors.append(err)
                if not on:
                    continue
                prio = self._free_priority(ipr, fam)
                added = 0
                for rule in (dict(table=self.table, fwmark=self.table, flags=FIB_RULE_INVERT, priority=prio),
                             dict(table=RT_TABLE_MAIN, suppress_prefixlen=0, priority=prio - 1)):
                    try:
                        ipr.rule("add", family=fam, protocol=RTPROT_STATIC, **rule)
                        changed, added = True, added + 1
                    except NetlinkError as e:
                        errors.append(f"adding {_NAMES[fam]} rule {_describe(rule)}: {_why(e)}")
                        break  # no suppress rule without its mark rule: it could not be found again
                if added == 2:
                    errs, _ = self._sync_bypass(ipr, fam, prio - 2, [], want)
                    errors.extend(errs)
            for msg in self._routes(ipr, self.table):
                if on and msg.get_attr("RTA_OIF") == idx:
                    continue
                changed = True  # off, or a route of a link of that name that was deleted and made again
                if err := self._del_route(ipr, msg, self.table):
                    errors.append(err)
            if on:
                have = {m["family"] for m in self._routes(ipr, self.table) if m.get_attr("RTA_OIF") == idx}
                for fam in FAMILIES:
                    if fam in have:
                        continue
                    kwargs: dict[str, Any] = {"dst": _DEFAULT[fam], "oif": idx, "table": self.table,
                                              "proto": "static", "family": fam}
                    if fam == socket.AF_INET:
                        kwargs["scope"] = RT_SCOPE_LINK  # like `ip route add default dev IF table T`
                    try:
                        ipr.route("add", **kwargs)
                        changed = True
                    except NetlinkError as e:
                        errors.append(f"adding {_DEFAULT[fam]} dev {self.ifname} table {self.table}: "
                                      f"{_why(e)}")
        if errors:
            raise NetConfError(f"{self.ifname} full tunnel: " + "; ".join(errors))
        return changed

    def clear(self) -> bool:
        """Remove our rules and routes (a missing link is fine); True when something was removed."""
        return self.apply(False)

    @staticmethod
    def _complete(mine: list[_Rule]) -> bool:
        """One mark rule with its suppress rule right before it."""
        marks = [r for r in mine if r.is_mark_rule]
        return len(marks) == 1 and len([r for r in mine if r.dst is None]) == 2

    @staticmethod
    def _sync_bypass(ipr: Any, family: int, priority: int, mine: list[_Rule],
                     want: set[str]) -> tuple[list[str], bool]:
        """Make the bypass rules at ``priority`` exactly ``want``; (errors, whether one changed)."""
        from pyroute2.netlink.exceptions import NetlinkError

        errors: list[str] = []
        have = {r.dst: r for r in mine if r.dst is not None}
        changed = False
        for dst in sorted(set(have) - want):
            changed = True
            if err := FullTunnel._del_rule(ipr, have[dst]):
                errors.append(err)
        for dst in sorted(want - set(have)):
            try:
                ipr.rule("add", family=family, protocol=RTPROT_STATIC, table=RT_TABLE_MAIN, priority=priority,
                         dst=dst, dst_len=32 if family == socket.AF_INET else 128)
                changed = True
            except NetlinkError as e:
                errors.append(f"adding {_NAMES[family]} rule to {dst} lookup main: {_why(e)}")
        return errors, changed

    @staticmethod
    def _free_priority(ipr: Any, family: int) -> int:
        """Where the kernel would put a rule added without a priority (``ip rule add``): just
        before the first rule after the local table's, so our two come before main's."""
        prios = sorted(int(m.get_attr("FRA_PRIORITY") or 0) for m in ipr.get_rules(family=family))
        first = next((p for p in prios if p > 0), 32766)
        return max(3, first - 1)  # room for the suppress and bypass rules before it

    @staticmethod
    def _del_rule(ipr: Any, r: _Rule) -> str | None:
        from pyroute2.netlink.exceptions import NetlinkError

        kwargs: dict[str, Any] = {"family": r.family, "priority": r.priority, "table": r.table,
                                  "protocol": RTPROT_STATIC}
        if r.dst is not None:
            kwargs.update(dst=r.dst, dst_len=32 if r.family == socket.AF_INET else 128)
        elif r.is_mark_rule:
            kwargs.update(fwmark=r.fwmark, flags=FIB_RULE_INVERT)
        else:
            kwargs.update(suppress_prefixlen=0)
        try:
            ipr.rule("del", **kwargs)
        except NetlinkError as e:
            if e.code not in (errno.ENOENT, errno.ESRCH):
                return f"removing {_NAMES[r.family]} rule {_describe(kwargs)}: {_why(e)}"
        return None

    @staticmethod
    def _del_route(ipr: Any, msg: Any, table: int) -> str | None:
        from pyroute2.netlink.exceptions import NetlinkError

        fam = msg["family"]
        try:
            ipr.route("del", dst=_DEFAULT[fam], family=fam, table=table, proto="static",
                      oif=msg.get_attr("RTA_OIF"), scope=msg["scope"])
        except NetlinkError as e:
            if e.code != errno.ESRCH:
                return f"removing {_DEFAULT[fam]} from table {table}: {_why(e)}"
        return None


def _describe(rule: dict[str, Any]) -> str:
    if "dst" in rule:
        return f"to {rule['dst']} lookup main"
    if "fwmark" in rule:
        return f"not fwmark {rule['fwmark']} table {rule['table']}"
    return "table main suppress_prefixlength 0"


def _why(e: Exception) -> str:
    return str(e.args[-1]) if e.args else str(e)
