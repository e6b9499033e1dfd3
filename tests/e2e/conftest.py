"""Fixtures for end-to-end tests in a lab of network namespaces (``skymesh.lab``).

They need root, ``ip``, ``ping``, wireguard-go, ``wg``, /dev/net/tun, Java and Mosquitto;
without them the tests are skipped with the reason. DynamoDB Local is installed on
first use (as for the integration tests) and a failure to install it fails loudly.
Leftovers of crashed earlier runs (labs whose owning process is gone) are removed first;
labs of runs still in progress are left alone.
"""

from __future__ import annotations

import pytest

from skymesh.lab import cleanup_stale, missing_requirements


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
