"""The README tells a new user what local mode really does (the papercuts of issue 7)."""

from __future__ import annotations

from pathlib import Path

from agent.wg.uapi import DEFAULT_SOCKET_DIR
from skymesh.local.stack import StackConfig

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
TEXT = " ".join(README.split())  # line breaks do not matter


def test_the_local_join_command_uses_the_plain_http_url_the_stack_serves() -> None:
    url = StackConfig(home=Path("unused")).api_url
    assert url.startswith("http://")
    assert f"skymesh-agent join --server {url} " in README


def test_interface_names_must_be_unique_across_network_namespaces() -> None:
    assert f"{DEFAULT_SOCKET_DIR}/<interface>.sock" in README
    assert "interface names must be unique on the machine **across network namespaces**" in TEXT


def test_scripts_are_told_how_to_wait_for_the_stack() -> None:
    assert "skymesh local wait" in README and '"state": "ready"' in README


def test_the_client_id_difference_from_iot_core_is_written_down() -> None:
    assert "use_username_as_clientid" in TEXT and "IoT Core refuses a CONNECT" in TEXT
