"""A throw-away lab of Linux network namespaces for end-to-end tests and ``make demo``.

A hub namespace with a bridge, one namespace per node, underlay addresses from
198.18.0.0/15, no default route anywhere; the control plane runs inside it and host
agents on its nodes. Everything needs root. One file per job:

- ``netns``: the :class:`Lab` and its nodes (namespaces, veths, calls into a node)
- ``control_plane``: ``skymesh local up`` in a node, with the shared REST client as ``admin``
- ``mesh``: host agents on the nodes; ``demo``: ``make demo``
- ``cleanup``: removing a lab, also one whose owner died; ``processes``, ``iproute``,
  ``linux``: bounded commands, ``ip``, ``setns``/``prctl``; ``wait``, ``errors``, ``names``,
  ``requirements``: the small shared pieces
"""

from .cleanup import cleanup_stale, leftovers
from .control_plane import ControlPlane
from .errors import LabError, LabTimeout
from .netns import Lab, Node
from .requirements import missing_requirements
from .wait import wait_until

__all__ = [
    "ControlPlane",
    "Lab",
    "LabError",
    "LabTimeout",
    "Node",
    "cleanup_stale",
    "leftovers",
    "missing_requirements",
    "wait_until",
]
