"""``python -m skymesh.admin``: the admin commands alone (``skymesh network|key|host``)."""

from __future__ import annotations

import sys

from .parser import main

sys.exit(main())
