"""Fixtures for end-to-end tests in a lab of network namespaces (``skymesh.lab``).

They need root, ``ip``, ``ping``, wireguard-go, ``wg``, /dev/net/tun, Java and Mosquitto;
without them the tests are skipped with the reason. DynamoDB Local is installed on
first use (as for the integration tests) and a failure to install it fails loudly.
Leftovers of crashed earlier runs (labs whose owning process is gone) are removed first;
labs of runs still in progress are left alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from skymesh.lab import ControlPlane, Lab, cleanup_stale, leftovers, missing_requirements
from skymesh.lab.mesh import LabAgent, agent_available


@dataclass
class Steps:
    """A module's lab whose tests are steps that build on each other, in order: what passed is
    in ``done``, and a step whose groundwork did not pass is skipped saying which."""

    lab: Lab
    cp: ControlPlane
    network: dict[str, Any]
    agents: dict[str, LabAgent]

    def __post_init__(self) -> None:
        self.done: set[str] = set()
        self.addresses: dict[str, list[str]] = {}  # agent name → overlay addresses

    def need(self, *steps: str) -> None:
        missing = [s for s in steps if s not in self.done]
        if missing:
            pytest.skip(f"needs step(s) {missing} of this module, which did not pass (or did not run)")

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """``method`` on a path below the module's network, as the admin."""
        return self.cp.admin.call(method, f"/v1/networks/{self.network['id']}{path}", body)


def require_lab(*, control_plane: bool = True, wireguard: bool = True) -> None:
    """Skip the calling test (or module) when the machine cannot run a lab."""
    missing = missing_requirements(control_plane=control_plane, wireguard=wireguard)
    if missing:
        pytest.skip("lab needs " + ", ".join(missing))


def require_dynamodb_local() -> None:
    from skymesh.local.dynamodb import install
    from skymesh.local.proc import LocalStackError

    try:
        install()
    except LocalStackError as e:
        pytest.fail(f"DynamoDB Local unavailable: {e}", pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def _stale_labs_removed() -> None:
    """Remove what crashed earlier runs left (only labs whose owner process is dead)."""
    if not missing_requirements(control_plane=False, wireguard=False):
        left = {p: what for p, what in cleanup_stale().items() if what}
        if left:
            pytest.fail(f"could not remove leftovers of earlier labs: {left}", pytrace=False)


def require_control_plane_lab() -> None:
    """Skip the calling test when the machine cannot run a lab with agents and a control plane."""
    require_lab()
    reason = agent_available()
    if reason:
        pytest.skip(reason)
    require_dynamodb_local()


@contextlib.contextmanager
def lab_with_control_plane() -> Iterator[tuple[Lab, ControlPlane]]:
    """A lab whose node ``cp`` runs the local control plane, for agents on further nodes; the
    calling test is skipped when the machine cannot run one. At exit everything is removed,
    and a test fails if anything of the lab was left behind."""
    require_control_plane_lab()
    with Lab() as lab:
        prefix = lab.prefix
        cp = ControlPlane(lab.add_node("cp"))
        cp.start()
        yield lab, cp
    assert leftovers(prefix) == [], f"the lab left things behind: {leftovers(prefix)}"
