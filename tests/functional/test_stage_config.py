"""A misconfigured stage answers every call with one error a person can act on, and the
stage's environment is read again once it is fixed."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

import app as app_module
from chalicelib.config import VARIABLES
from chalicelib.wiring import set_service

from .conftest import GatewayHttp

AWS_WITHOUT_POLICY = {"SKYMESH_PUBLISHER": "iot", "SKYMESH_IDENTITY": "iot", "AWS_REGION": "us-east-1"}
MEMORY = {"SKYMESH_PUBLISHER": "memory", "SKYMESH_IDENTITY": "memory", "AWS_REGION": "us-east-1"}


@pytest.fixture
def stage_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No stage variables but the test's; the handlers build their service from them."""
    for variable in VARIABLES:
        monkeypatch.delenv(variable.name, raising=False)
    set_service(None)
    try:
        yield monkeypatch
    finally:
        set_service(None)


@pytest.mark.parametrize("env, variable", [
    (AWS_WITHOUT_POLICY, "SKYMESH_IOT_POLICY"),  # was a 503 "retry" from the AWS adapters
    ({**MEMORY, "SKYMESH_OFFLINE_AFTER": "11m"}, "SKYMESH_OFFLINE_AFTER"),  # was a bare 500 "internal"
    ({"SKYMESH_PUBLISHER": "mqtt", "SKYMESH_IDENTITY": "local", "SKYMESH_HOME": "/srv/skymesh",
      "SKYMESH_MQTT_CLIENT_NAME": "api"}, "SKYMESH_MQTT_HOST"),
    ({"SKYMESH_PUBLISHER": "iot", "SKYMESH_IDENTITY": "memory"}, "SKYMESH_PUBLISHER"),
])
def test_a_misconfigured_stage_is_a_500_that_names_the_variable(
        stage_env: pytest.MonkeyPatch, env: dict[str, str], variable: str) -> None:
    for name, value in env.items():
        stage_env.setenv(name, value)
    http = GatewayHttp(app_module.app)
    for path in ("/v1/health", "/v1/networks"):
        resp = http.get(path, headers={"Authorization": "Bearer skm_ak_x"})
        assert resp.status_code == 500, (path, resp.body)
        error = json.loads(resp.body)["error"]
        assert error["code"] == "misconfigured" and variable in error["message"], error


def test_a_fixed_stage_is_read_again_on_the_next_call(stage_env: pytest.MonkeyPatch) -> None:
    for name, value in AWS_WITHOUT_POLICY.items():
        stage_env.setenv(name, value)
    http = GatewayHttp(app_module.app)
    assert http.get("/v1/health").status_code == 500
    for name, value in MEMORY.items():
        stage_env.setenv(name, value)
    resp = http.get("/v1/health")
    assert resp.status_code == 200 and json.loads(resp.body)["ok"] is True
