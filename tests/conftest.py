"""Shared pytest fixtures. Keep each fixture small and documented; add yours below."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# --- DynamoDB Local ---------------------------------------------------------------


@pytest.fixture(scope="session")
def dynamodb_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of one in-memory DynamoDB Local for the whole test session.

    Installs DynamoDB Local first when missing (``npm pack``, see
    ``skymesh.local.dynamodb``); fails loudly, never skips, when it cannot.
    """
    from skymesh.local.dynamodb import DynamoDBLocal, install
    from skymesh.local.proc import LocalStackError, free_port

    try:
        directory = install()
        db = DynamoDBLocal(
            free_port(),
            in_memory=True,
            directory=directory,
            log_path=tmp_path_factory.mktemp("dynamodb-local") / "dynamodb-local.log",
        )
        db.start()
    except LocalStackError as e:
        pytest.fail(f"DynamoDB Local unavailable: {e}", pytrace=False)
    try:
        yield db.endpoint_url
    finally:
        db.stop()


@pytest.fixture(scope="session")
def ddb_endpoint(request: pytest.FixtureRequest) -> str:
    """DynamoDB Local: the suite's own (or SKYMESH_TEST_DYNAMODB_ENDPOINT, to reuse one)."""
    return os.environ.get("SKYMESH_TEST_DYNAMODB_ENDPOINT") or request.getfixturevalue("dynamodb_local")
