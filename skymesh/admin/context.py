"""What an admin command gets (:class:`Context`), and the lookups every command shares:
whole lists, names to records, the checks made before calling the API."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..client import ApiClient
from ..errors import CliError

__all__ = ["Command", "Context", "all_hosts", "all_keys", "all_networks", "network_names", "require_changes",
           "resolve"]


@dataclass
class Context:
    """What a command gets: the client, its arguments, where to print, and the time now.

    ``now`` is whole seconds, like the API's timestamps, so an expiry computed from
    it (``--expires-in 7d``) reads back as exactly ``in 7d``.
    """

    client: ApiClient
    args: argparse.Namespace
    out: TextIO = field(default_factory=lambda: sys.stdout)
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC).replace(microsecond=0))

    @property
    def as_json(self) -> bool:
        """Whether to print the API's JSON instead of tables."""
        return bool(getattr(self.args, "json", False))

    @property
    def page_size(self) -> int | None:
        """``--page-size``: records per API call when listing (``None``: the API's default)."""
        return getattr(self.args, "page_size", None)

    def print(self, text: str = "") -> None:
        """One block of text on stdout."""
        print(text, file=self.out)

    def print_json(self, payload: Any) -> None:
        """The API's answer as JSON (keys in the API's order); nothing for an empty answer."""
        if payload is not None:
            print(json.dumps(payload, indent=2), file=self.out)

    def changed(self, kind: str, record: Mapping[str, Any], verb: str) -> bool:
        """Whether a command that changed ``record`` is done: with ``--json`` it printed the API's
        answer; else it printed ``<kind> <name> <verb> (<id>)`` and the command may go on."""
        if self.as_json:
            self.print_json(record)
            return True
        self.print(f"{kind} {record['name']} {verb} ({record['id']})")
        return False

    def listed_alone(self, key: str, items: list[dict[str, Any]], empty: str) -> bool:
        """Whether a list command is done: with ``--json`` it printed every page's records as one
        last page (``{key: [...], "next_cursor": null}``); with no records, the ``empty`` message."""
        if self.as_json:
            self.print_json({key: items, "next_cursor": None})
            return True
        if not items:
            self.print(empty)
            return True
        return False


Command = Callable[[Context], None]


def resolve(items: Sequence[Mapping[str, Any]], ref: str, kind: str) -> Mapping[str, Any]:
    """The item whose id is ``ref``, else the one whose name is ``ref``.

    Raises :class:`CliError` when there is none, or when several share the name
    (the message lists their ids, sorted).
    """
    for item in items:
        if item["id"] == ref:
            return item
    named = [item for item in items if item.get("name") == ref]
    if len(named) == 1:
        return named[0]
    if not named:
        raise CliError(f"no {kind} has the id or name {ref!r}")
    ids = ", ".join(sorted(item["id"] for item in named))
    raise CliError(f"{len(named)} {kind}s are named {ref!r}: {ids}; give an id instead")


def all_networks(ctx: Context) -> list[dict[str, Any]]:
    """Every network, however many pages it takes."""
    return ctx.client.list_networks(ctx.page_size)


def all_hosts(ctx: Context) -> list[dict[str, Any]]:
    """Every host, however many pages it takes."""
    return ctx.client.list_hosts(ctx.page_size)


def all_keys(ctx: Context) -> list[dict[str, Any]]:
    """Every enrollment key, however many pages it takes."""
    return ctx.client.list_enrollment_keys(ctx.page_size)


def network_names(ids: Iterable[str], networks: Sequence[Mapping[str, Any]]) -> list[str]:
    """The names of these network ids; ``<id> (deleted)`` for one that is gone."""
    names = {n["id"]: n["name"] for n in networks}
    return [names.get(i, f"{i} (deleted)") for i in ids]


def require_changes(body: Mapping[str, Any], options: str) -> None:
    """Refuse an update that changes nothing, before calling the API."""
    if not body:
        raise CliError(f"nothing to change: give {options}")
