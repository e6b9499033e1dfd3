"""Issue 7: after an outage of the control plane the agent converges within 10 s of its return.

A failed resync is retried with a doubling, jittered backoff; however long the API was
down, the next try is never more than ``Timings.resync_max`` (8 s) away.
"""

from __future__ import annotations

import time

from agent.api import Unreachable

from .test_agent_runner import ScriptedApi, make_agent, member, peer_keys, snapshot

CONVERGE_WITHIN = 10.0  # seconds after the API is back (issue 7)
ONE_RESYNC = 2.0  # a /config under load, generously


def test_after_a_long_api_outage_the_next_resync_is_soon_enough_to_converge_in_10s(tmp_path):
    members = [member(i) for i in (1, 2, 3)]
    api = ScriptedApi(Unreachable("cannot reach http://198.18.0.1:8787: connection refused"))
    agent, backend, _ = make_agent(tmp_path, api)
    waits = []
    for _ in range(12):  # 12 failures: longer than any outage needs for the backoff to reach its cap
        agent.resync()
        assert agent.timers["resync"].due is not None  # a retry is scheduled
        waits.append(agent.timers["resync"].due - time.monotonic())
    assert max(waits[-4:]) + ONE_RESYNC <= CONVERGE_WITHIN
    assert min(waits[-4:]) > 1.0  # still a backoff: a fleet does not hammer a failing API

    api.answer = [snapshot(5, members)]  # the API is back: the scheduled try converges
    agent.resync()
    assert agent.timers["resync"].due is None and agent.error is None
    assert peer_keys(backend) == {members[1].public_key, members[2].public_key}
