from __future__ import annotations

from typing import Any

import pytest

from exportpipe.worker.protection import TaskProtection


def test_busy_sets_and_idle_clears(ecs_agent: Any) -> None:
    protection = TaskProtection(ecs_agent.uri, minutes=60)
    protection.on_busy_change(True)
    first = ecs_agent.wait_for(1)
    assert first[0] == {
        "path": "/v1/task-protection/v1/state",
        "ProtectionEnabled": True,
        "ExpiresInMinutes": 60,
    }
    protection.on_busy_change(False)
    calls = ecs_agent.wait_for(2)
    assert calls[1]["ProtectionEnabled"] is False
    protection.close()
    assert len(ecs_agent.calls) == 2


def test_close_clears_protection_held(ecs_agent: Any) -> None:
    protection = TaskProtection(ecs_agent.uri, minutes=5)
    protection.on_busy_change(True)
    ecs_agent.wait_for(1)
    protection.close()
    assert [c["ProtectionEnabled"] for c in ecs_agent.calls] == [True, False]


def test_refusal_is_retried(ecs_agent: Any) -> None:
    ecs_agent.fail = True
    protection = TaskProtection(ecs_agent.uri, minutes=5, retry_seconds=0.2)
    protection.on_busy_change(True)
    ecs_agent.wait_for(1)
    ecs_agent.fail = False
    calls = ecs_agent.wait_for(2, timeout=10)
    assert [c["ProtectionEnabled"] for c in calls[:2]] == [True, True]
    protection.close()


def test_no_agent_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ECS_AGENT_URI", raising=False)
    protection = TaskProtection.from_env(minutes=5)
    assert not protection.enabled
    protection.on_busy_change(True)
    protection.close()
    assert protection.calls == 0


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_protection_is_never_requested_past_the_drain_deadline(ecs_agent: Any) -> None:
    clock = _Clock()
    # 60-minute protection, but the task must let go 25.5 minutes from now.
    protection = TaskProtection(
        ecs_agent.uri, minutes=60, deadline=clock.now + 25.5 * 60, clock=clock
    )
    assert protection.expires_in_minutes() == 25
    protection.on_busy_change(True)
    (first,) = ecs_agent.wait_for(1)
    assert first["ExpiresInMinutes"] == 25
    clock.now += 25 * 60  # under a minute left: still busy, but protection is cleared
    protection.on_busy_change(True)  # wakes the thread, as any busy change would
    calls = ecs_agent.wait_for(2, timeout=10)
    assert calls[1]["ProtectionEnabled"] is False
    protection.close()


def test_without_deadline_the_full_length_is_requested(ecs_agent: Any) -> None:
    protection = TaskProtection(ecs_agent.uri, minutes=60)
    assert protection.expires_in_minutes() == 60
    protection.close()
