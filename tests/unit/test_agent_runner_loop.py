"""The agent's run loop: what mutation testing (``make mutate``) showed no test pinned.

Each test kills mutants of ``agent/runner.py`` that survived the rest of the suite:
events queued by the MQTT thread are handled by ``step``, a dropped connection
stops reports until the next connect, and a report says which agent sent it.
"""

from __future__ import annotations

from agent import __version__
from agent.mqtt import Connected, Disconnected, Received
from chalicelib.domain import protocol

from .test_agent_runner import NET, ScriptedApi, make_agent, member, peer_keys, snapshot


def _reports(link) -> list:  # noqa: ANN001
    return [protocol.decode(p) for t, p in link.published if t == "sm/h/host_1/status"]


def test_events_queued_by_the_mqtt_thread_are_handled_by_the_loop(tmp_path):
    members = [member(i) for i in (1, 2)]
    agent, backend, link = make_agent(tmp_path, ScriptedApi([snapshot(7, members)]))
    agent.boot()
    agent.events.put(Connected())
    agent.step(timeout=0)
    assert agent.connected and agent.tracker.seq(NET) == 7 and "sm/n/net_a" in link.subscribed

    newcomer = member(3)
    agent.events.put(Received("sm/n/net_a", protocol.encode(protocol.Delta(NET, 8, upsert=(newcomer,)))))
    agent.step(timeout=0)
    assert newcomer.public_key in peer_keys(backend) and agent.tracker.seq(NET) == 8


def test_after_a_disconnect_nothing_is_reported_until_the_next_connect(tmp_path):
    agent, _, link = make_agent(tmp_path, ScriptedApi([snapshot(7, [member(1), member(2)])]), heartbeat=0)
    agent.boot()
    agent.handle(Connected())
    agent.report_status()
    assert len(_reports(link)) == 1
    agent.handle(Disconnected("connection reset"))
    agent.report_status()
    assert len(_reports(link)) == 1 and not agent.connected
    agent.handle(Connected())
    agent.report_status()
    assert len(_reports(link)) == 2


def test_a_report_says_which_agent_version_sent_it(tmp_path):
    agent, _, link = make_agent(tmp_path, ScriptedApi([snapshot(7, [member(1)])]))
    agent.boot()
    agent.handle(Connected())
    agent.report_status()
    (report,) = _reports(link)
    assert report.agent_version == __version__ and report.endpoints == ("198.18.0.1:51820",)
