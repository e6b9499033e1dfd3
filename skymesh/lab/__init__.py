"""A throw-away lab of Linux network namespaces for end-to-end tests and ``make demo``.

``skymesh.lab.netns`` builds the lab (a hub namespace with a bridge, one namespace
per node, underlay addresses from 198.18.0.0/15, no default route anywhere) and
runs the control plane inside it; ``skymesh.lab.mesh`` drives host agents on the
nodes; ``skymesh.lab.demo`` is ``make demo``. Everything needs root.
"""

from .netns import (
    AdminClient,
    ApiError,
    ControlPlane,
    Lab,
    LabError,
    LabTimeout,
    Node,
    cleanup_stale,
    leftovers,
    missing_requirements,
    wait_until,
)

__all__ = [
    "AdminClient",
    "ApiError",
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
