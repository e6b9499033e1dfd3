"""The stage's configuration: one list of variables that every place setting them agrees with,
read into one frozen config, with one error that says what to set."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from chalicelib import config
from chalicelib.config import ConfigError, StageConfig
from skymesh.local.stack import StackConfig, child_env

REPO = Path(__file__).resolve().parents[2]
NAMES = {v.name for v in config.VARIABLES}
MEMORY = {"SKYMESH_PUBLISHER": "memory", "SKYMESH_IDENTITY": "memory"}
AWS = {"SKYMESH_PUBLISHER": "iot", "SKYMESH_IDENTITY": "iot", "AWS_REGION": "eu-west-1",
       "SKYMESH_IOT_POLICY": "skymesh-host"}
LOCAL = {"SKYMESH_PUBLISHER": "mqtt", "SKYMESH_IDENTITY": "local", "SKYMESH_HOME": "/srv/skymesh",
         "SKYMESH_MQTT_HOST": "127.0.0.1", "SKYMESH_MQTT_CLIENT_NAME": "api"}


def chalice_stage(name: str) -> dict[str, str]:
    """A stage's variables as Chalice sets them: the top level's, then the stage's own."""
    raw: dict[str, Any] = json.loads((REPO / ".chalice" / "config.json").read_text())
    return {**raw.get("environment_variables", {}), **raw["stages"][name].get("environment_variables", {})}


def test_every_place_that_sets_the_stage_sets_only_variables_the_control_plane_reads() -> None:
    raw = json.loads((REPO / ".chalice" / "config.json").read_text())
    for stage in raw["stages"]:
        assert set(chalice_stage(stage)) <= NAMES, stage  # e.g. no SKYMESH_STAGE nobody reads
    stack = child_env(StackConfig(home=Path("/tmp/h")), "api", base={})
    assert {k for k in stack if k.startswith("SKYMESH_")} <= NAMES
    assert set(config.AWS_STAGE_ENV) <= NAMES


def test_the_chalice_local_stage_is_the_local_stack_and_its_relative_home_is_resolved(
        tmp_path: Path) -> None:
    env = chalice_stage("local")
    assert env == {**config.local_stage_env(".skymesh"), config.MQTT_CLIENT_NAME: "chalice-local"}
    local = StageConfig.from_env(env, cwd=tmp_path).local
    assert local is not None
    assert local.home == tmp_path / ".skymesh" and local.home.is_absolute()
    assert local.ca_path == tmp_path / ".skymesh" / "ca" / "ca.pem"


def test_the_chalice_prod_stage_is_an_aws_stage() -> None:
    env = chalice_stage("prod")
    assert config.AWS_STAGE_ENV.items() <= env.items()
    cfg = StageConfig.from_env({**env, "AWS_REGION": "eu-west-1"})
    assert cfg.adapters == "aws" and cfg.aws is not None and cfg.aws.policy == "skymesh-host"


def test_a_local_stack_child_reads_as_the_local_stage_it_was_given(tmp_path: Path) -> None:
    cfg = StackConfig(home=tmp_path / "home", mqtt_port=18883, dynamodb_port=18000)
    read = StageConfig.from_env(child_env(cfg, "scheduler", base={}))
    assert read.adapters == "local" and read.dynamodb_endpoint == "http://127.0.0.1:18000"
    assert read.local is not None
    assert (read.local.home, read.local.mqtt_port) == (tmp_path / "home", 18883)
    assert read.local.client_cert == tmp_path / "home" / "control" / "scheduler.pem"


def test_defaults_and_values_are_read_once_into_a_frozen_config() -> None:
    cfg = StageConfig.from_env({**AWS, "SKYMESH_TABLE": " t1 ", "SKYMESH_OFFLINE_AFTER": "120",
                                "SKYMESH_IOT_ENDPOINT": "https://abc-ats.iot.eu-west-1.amazonaws.com/"})
    assert (cfg.table, cfg.region, cfg.settings.offline_after, cfg.settings.orphan_after) == (
        "t1", "eu-west-1", 120, 300)
    assert cfg.aws is not None and cfg.aws.endpoint == "abc-ats.iot.eu-west-1.amazonaws.com"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.table = "other"  # type: ignore[misc]
    assert StageConfig.from_env({**MEMORY, "AWS_DEFAULT_REGION": "ap-south-1"}).region == "ap-south-1"


@pytest.mark.parametrize("env, variable, says", [
    ({"SKYMESH_PUBLISHER": "mqtt", "SKYMESH_IDENTITY": "iot"}, "SKYMESH_PUBLISHER", "mqtt+local"),
    ({**AWS, "AWS_REGION": ""}, "AWS_REGION", "region"),
    ({**AWS, "SKYMESH_IOT_POLICY": " "}, "SKYMESH_IOT_POLICY", "IoT policy"),
    ({**MEMORY, "SKYMESH_OFFLINE_AFTER": "soon"}, "SKYMESH_OFFLINE_AFTER", "whole number of seconds"),
    ({**MEMORY, "SKYMESH_ORPHAN_AFTER": "5m"}, "SKYMESH_ORPHAN_AFTER", "whole number of seconds"),
    ({**LOCAL, "SKYMESH_HOME": ""}, "SKYMESH_HOME", "skymesh local up"),
    ({**LOCAL, "SKYMESH_MQTT_HOST": ""}, "SKYMESH_MQTT_HOST", "skymesh local up"),
    ({**LOCAL, "SKYMESH_MQTT_PORT": "88830"}, "SKYMESH_MQTT_PORT", "1-65535"),
    ({**LOCAL, "SKYMESH_MQTT_TIMEOUT": "0"}, "SKYMESH_MQTT_TIMEOUT", "positive"),
    ({**LOCAL, "SKYMESH_MQTT_CLIENT_NAME": "", "SKYMESH_MQTT_CLIENT_CERT": "/c.pem"},
     "SKYMESH_MQTT_CLIENT_KEY", "control client certificate"),
])
def test_a_misconfigured_stage_is_one_error_that_names_the_variable(
        env: dict[str, str], variable: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        StageConfig.from_env(env)
    assert (info.value.status, info.value.code) == (500, "misconfigured")
    assert variable in info.value.message and says in info.value.message
