"""``skymesh-agent``'s command line and ``status`` output, without network or root.

The state directory is a real one on disk; the device is the in-memory backend.
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from agent import cli
from agent.mqtt import Connected
from agent.state import DEFAULT_STATE_DIR, StateDir
from agent.status import collect, render

from .test_agent_runner import FlakyLink, ScriptedApi, make_agent, snapshot


@pytest.mark.parametrize("argv, env, expected", [
    (["--state-dir", "/srv/a", "status"], None, "/srv/a"),
    (["status", "--state-dir", "/srv/b"], None, "/srv/b"),
    (["status"], "/srv/c", "/srv/c"),
    (["leave", "--force", "--state-dir", "/srv/d"], "/srv/c", "/srv/d"),
    (["--state-dir", "/srv/e", "run"], "/srv/c", "/srv/e"),
    (["run"], None, str(DEFAULT_STATE_DIR)),
    (["run"], "", str(DEFAULT_STATE_DIR)),
])
def test_state_dir_goes_before_or_after_the_subcommand_or_comes_from_the_environment(
        argv, env, expected, monkeypatch):
    if env is None:
        monkeypatch.delenv(cli.STATE_DIR_ENV, raising=False)
    else:
        monkeypatch.setenv(cli.STATE_DIR_ENV, env)
    assert cli.build_parser().parse_args(argv).state_dir == Path(expected)


def test_verbose_goes_before_or_after_the_subcommand():
    p = cli.build_parser()
    assert p.parse_args(["-v", "status"]).verbose and p.parse_args(["status", "-v"]).verbose
    assert not p.parse_args(["status"]).verbose


@pytest.fixture
def members():
    from .test_agent_runner import member
    return [member(i) for i in (1, 2, 3)]


def test_status_finds_the_state_through_the_environment(tmp_path, members, monkeypatch, capsys):
    agent, _, _ = make_agent(tmp_path, ScriptedApi([snapshot(7, members)]), cache=[snapshot(7, members)])
    agent.dir.save(replace(agent.state, backend="memory"))
    monkeypatch.setenv(cli.STATE_DIR_ENV, str(agent.dir.path))
    assert cli.main(["status", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["host_id"] == "host_1" and st["networks"][0]["seq"] == 7
    assert [p["name"] for p in st["networks"][0]["peers"]] == ["h2", "h3"]
    assert st["agent"]["running"] is False and st["device_up"] is False


def test_status_without_state_says_how_to_join(tmp_path, capsys):
    assert cli.main(["status", "--state-dir", str(tmp_path / "none")]) == cli.EXIT_USAGE
    assert "skymesh-agent join" in capsys.readouterr().err


def test_status_shows_a_subscription_that_failed_and_when_it_is_tried_again(tmp_path, members):
    agent, backend, _ = make_agent(tmp_path, ScriptedApi([snapshot(7, members)]))
    agent.link = FlakyLink(refuse=("sm/n/net_a",))
    agent.boot()
    agent.handle(Connected())
    runtime = agent.dir.load_runtime()
    st = collect(agent.state, agent.tracker, backend.stats(), runtime, backend.name, alive=True)
    assert st["agent"]["subscriptions"] == [
        {"topic": "sm/h/host_1/in", "state": "subscribed", "error": None},
        {"topic": "sm/n/net_a", "state": "refused", "error": "refused by the broker"}]
    retry_at = st["agent"]["subscriptions_retry_at"]
    text = render(st, now=retry_at - 1)
    assert ("subscriptions: 1 of 2 subscribed; sm/n/net_a refused (refused by the broker); next try in 1s"
            in text)
    assert "agent: connected" in text


def test_status_renders_names_addresses_handshakes_and_transfer(tmp_path, members):
    agent, backend, _ = make_agent(tmp_path, ScriptedApi([snapshot(7, members)]))
    agent.boot()
    agent.resync()
    backend.record_traffic(members[1].public_key, 1_000_000 - 75, 3 * 1024 * 1024, 2048)
    said = {"running": True, "last_sync": 1_000_000 - 3661}  # what an agent wrote before it was killed
    st = collect(agent.state, agent.tracker, backend.stats(), said, backend.name, alive=False)
    text = render(st, now=1_000_000)
    assert "agent: not running (it stopped without saying so: killed or crashed)" in text
    assert "last full sync: 1 hour, 1 minute, 1 second ago" in text
    assert "peer: h2 (host_2)" in text and "latest handshake: 1 minute, 15 seconds ago" in text
    assert "transfer: 3.00 MiB received, 2.00 KiB sent" in text
    assert "peer: h3 (host_3)" in text and "latest handshake: never" in text
    assert "addresses: 100.64.0.2, fd00:1::2" in text


def test_a_state_dir_has_one_owner(tmp_path):
    sd = StateDir(tmp_path / "state")
    sd.create()
    assert sd.lock_holder() is None
    with sd.try_lock("run") as lock:
        assert lock is not None
        holder = sd.lock_holder()
        assert holder is not None and holder.command == "run" and holder.pid > 0
        assert StateDir(sd.path).try_lock("leave") is None
    assert sd.lock_holder() is None
    with sd.try_lock("leave"):
        sd.wipe()  # the lock file goes too; a later run locks a new one
    with sd.try_lock("run") as again:
        assert again is not None


def test_run_started_while_leave_holds_the_state_waits_then_finds_nothing_to_run(tmp_path, members, capsys):
    # Under systemd (Restart=always) the unit restarts `run` while `leave` removes everything: that
    # `run` must not bring the interface back; it waits for `leave`, then exits 2, which the unit
    # does not restart (RestartPreventExitStatus).
    agent, _, _ = make_agent(tmp_path, ScriptedApi([snapshot(7, members)]))
    sd = agent.dir
    result: list[int] = []
    with sd.try_lock("leave") as lock:
        assert lock is not None
        t = threading.Thread(target=lambda: result.append(cli.main(["run", "--state-dir", str(sd.path)])))
        t.start()
        t.join(timeout=0.5)
        assert t.is_alive() and result == []  # waiting for leave, not running
        sd.wipe()
    t.join(timeout=10)
    assert result == [cli.EXIT_USAGE]
    assert "skymesh-agent join" in capsys.readouterr().err


def test_status_shows_a_gateway_its_clients_and_a_full_tunnel(tmp_path, members):
    from chalicelib.domain.ids import ClientId, HostId
    from chalicelib.domain.models import Client, Gateway, MemberRole

    from .test_agent_runner import NET

    me, h2, h3 = members
    gw = replace(me, role=MemberRole(gateway=Gateway(remote_access=True, egress=("10.20.0.0/16",))))
    phone = Client(ClientId("cli_phone"), me.network_id, "phone", h3.public_key[:-4] + "AAA=",
                   "100.64.9.9", "fd00:1::9:9", HostId("host_1"), extra_addresses=("192.168.7.0/24",))
    snap = replace(snapshot(7, [gw, h2, h3]), clients=(phone,))
    agent, backend, _ = make_agent(tmp_path, ScriptedApi([snap]))
    agent.boot()
    agent.resync()
    text = render(collect(agent.state, agent.tracker, backend.stats(), {"running": True}, backend.name))
    assert "gateway: forwards 100.64.0.0/16, fd00:1::/64, 10.20.0.0/16, 192.168.7.0/24" in text, text
    assert "masquerades to 10.20.0.0/16" in text
    assert "peer: phone (cli_phone), remote-access client" in text
    assert "addresses: 100.64.9.9, fd00:1::9:9\n    routes: 192.168.7.0/24" in text

    # h2 as an internet gateway that this host uses with full tunnel: everything else goes there
    internet = replace(h2, role=MemberRole(gateway=Gateway(internet=True)))
    user = replace(me, role=MemberRole(internet_gateway=HostId("host_2"), full_tunnel=True))
    agent.tracker.replace([snapshot(8, [user, internet, h3])])
    st = collect(agent.state, agent.tracker, backend.stats(), {"running": True}, backend.name)
    text = render(st)
    assert "full tunnel: all other traffic through h2 (host_2)" in text, text
    (net,) = st["networks"]
    assert net["id"] == NET and net["gateway"] is None
    assert next(p for p in net["peers"] if p["host_id"] == "host_2")["routes"] == ["0.0.0.0/0", "::/0"]


def test_status_shows_who_relays_this_host_and_whom_it_relays(tmp_path, members):
    from chalicelib.domain.ids import HostId
    from chalicelib.domain.models import MemberRole

    me, h2, h3 = members
    relayed = replace(me, role=MemberRole(relayed_by=HostId("host_2")))
    agent, backend, _ = make_agent(tmp_path, ScriptedApi([snapshot(7, [relayed, h2, h3])]))
    agent.boot()
    agent.resync()
    st = collect(agent.state, agent.tracker, backend.stats(), {"running": True}, backend.name)
    text = render(st)
    assert "relayed by h2 (host_2): every host is reached through it" in text, text
    assert [p["host_id"] for p in st["networks"][0]["peers"]] == ["host_2"]

    # this host relays the other two: it says so, and is no gateway for that
    agent.tracker.replace([snapshot(8, [me, replace(h2, role=MemberRole(relayed_by=me.host_id)),
                                        replace(h3, role=MemberRole(relayed_by=me.host_id))])])
    st = collect(agent.state, agent.tracker, backend.stats(), {"running": True}, backend.name)
    text = render(st)
    assert "relays 2 hosts: h2 (host_2), h3 (host_3)" in text, text
    assert st["networks"][0]["gateway"] is None and "gateway:" not in text
