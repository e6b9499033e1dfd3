"""``skymesh network|key|host``: the admin CLI over REST API v1 (standard library only).

Where to talk to, lowest precedence first: ``$SKYMESH_HOME/local.json`` (home
``./.skymesh`` by default; keys ``api_url`` and ``admin_key``, as ``skymesh
local up`` writes them), then ``$SKYMESH_API`` / ``$SKYMESH_ADMIN_KEY``, then
``--api`` / ``--key``.

Output is an aligned table for people; ``--json`` prints the API's JSON body
instead (nothing for calls that answer 204). Exit codes: 0 done, 1 the API or
the command line refused (``error: <message>`` on stderr), 2 the API could not
be reached. Arguments argparse itself rejects exit with its usual 2.

``add_commands`` registers the three groups on the ``skymesh`` parser; every
leaf parser sets ``func``, so the caller runs ``sys.exit(args.func(args))``.

Layout: :mod:`.settings` (where the API is), :mod:`.argtypes` (option values),
:mod:`.output` (tables and times for people), :mod:`.context` (what a command gets;
names to ids), :mod:`.networks`, :mod:`.keys`, :mod:`.hosts` (the commands),
:mod:`.parser` (argparse and running a command). The HTTP calls are
:mod:`skymesh.client`'s, shared with the lab and the benches.
"""

from __future__ import annotations

from ..errors import EXIT_ERROR, EXIT_OK, EXIT_UNREACHABLE, CliError
from .argtypes import parse_duration, parse_time
from .context import Command, Context, resolve
from .hosts import host_delete, host_list, host_show, host_update
from .keys import key_create, key_list, key_revoke
from .networks import network_create, network_delete, network_list, network_show, network_update
from .output import format_fields, format_table, human_bytes, human_duration, relative_time
from .parser import add_commands, build_parser, main, run_command
from .settings import Settings, resolve_settings

__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "CliError",
    "Command",
    "Context",
    "Settings",
    "add_commands",
    "build_parser",
    "format_fields",
    "format_table",
    "host_delete",
    "host_list",
    "host_show",
    "host_update",
    "human_bytes",
    "human_duration",
    "key_create",
    "key_list",
    "key_revoke",
    "main",
    "network_create",
    "network_delete",
    "network_list",
    "network_show",
    "network_update",
    "parse_duration",
    "parse_time",
    "relative_time",
    "resolve",
    "resolve_settings",
    "run_command",
]
