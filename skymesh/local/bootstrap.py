"""``python -m skymesh.local.bootstrap``: create the table and the admin key, in the
stack's child environment (so the service is built exactly as the API builds it).

Reads an existing admin token (or an empty line) on stdin, never from argv, and
prints ``{"admin_key": "..."}`` on stdout.
"""

from __future__ import annotations

import json
import os
import sys

__all__ = ["main"]


def main() -> int:
    from chalicelib.adapters.dynamodb import ensure_table
    from chalicelib.wiring import build_service

    existing = sys.stdin.readline().strip() or None
    ensure_table(
        os.environ["SKYMESH_TABLE"],
        os.environ["SKYMESH_DYNAMODB_ENDPOINT"],
        os.environ["AWS_DEFAULT_REGION"],
    )
    token = build_service().ensure_admin_key(existing)
    sys.stdout.write(json.dumps({"admin_key": token}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
