"""``skymesh``: the command line. ``skymesh local …`` runs the local stack.

Each command family registers itself on the top-level subparsers with an
``add_*_commands(subparsers)`` function and sets ``func`` (``args -> exit code``).
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skymesh", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from .admin import add_commands as add_admin_commands
    from .local.stack import add_local_commands

    add_local_commands(subparsers)
    add_admin_commands(subparsers)  # network | key | host, over the REST API

    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return its exit code."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
