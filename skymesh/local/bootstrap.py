"""``python -m skymesh.local.bootstrap``: create the table and the admin key, in the
stack's child environment (read as the API reads it, so the key is the one it accepts).

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
    from chalicelib.config import StageConfig
    from chalicelib.wiring import admin_keys

    existing = sys.stdin.readline().strip() or None
    config = StageConfig.from_env(os.environ)
    ensure_table(config.table, config.dynamodb_endpoint, config.region)
    token = admin_keys(config.table, region=config.region,
                       endpoint_url=config.dynamodb_endpoint).ensure_admin_key(existing)
    sys.stdout.write(json.dumps({"admin_key": token}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
