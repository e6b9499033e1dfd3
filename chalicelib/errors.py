"""The control plane's errors, under the name the service, the adapters and the API import.

They are defined in :mod:`chalicelib.domain.errors`: the pure domain raises them too, and
imports nothing from outside the domain (``tests/unit/test_import_rules.py``).
"""

from __future__ import annotations

from .domain.errors import *  # noqa: F403 - every name of its one definition
from .domain.errors import __all__  # noqa: F401
