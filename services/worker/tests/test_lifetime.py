"""The worker task's maximum age: drain through the consumer's shutdown path."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from exportpipe.common.sizing import DEFAULT_DEPLOYMENT
from exportpipe.worker.lifetime import TaskLifetime
from exportpipe.worker.settings import WorkerSettings


def test_drains_with_the_long_grace_at_the_maximum_age() -> None:
    calls: list[dict[str, Any]] = []
    fired = threading.Event()

    def shutdown(**kwargs: Any) -> None:
        calls.append(kwargs)
        fired.set()

    lifetime = TaskLifetime(drain_after_seconds=0.2, drain_grace_seconds=90).start(shutdown)
    assert fired.wait(5)
    assert calls == [{"grace_seconds": 90, "reason": "max_age"}]
    assert lifetime.drained.is_set()
    # Protection may outlive the drain by the release margin only.
    assert lifetime.protection_deadline - lifetime.started == pytest.approx(0.2 + 90 + 60)


def test_cancel_disarms() -> None:
    calls: list[dict[str, Any]] = []
    lifetime = TaskLifetime(drain_after_seconds=0.2, drain_grace_seconds=1).start(
        lambda **kw: calls.append(kw)
    )
    lifetime.cancel()
    assert not lifetime.drained.wait(0.5)
    assert calls == []


def test_settings_default_to_the_sizing_bound() -> None:
    fields = WorkerSettings.model_fields
    policy = DEFAULT_DEPLOYMENT.worker_scaling
    assert fields["drain_after_minutes"].default == policy.drain_after_minutes
    assert fields["drain_grace_minutes"].default == policy.drain_grace_minutes
    assert policy.release_bound_minutes == (
        policy.drain_after_minutes + policy.drain_grace_minutes + 1
    )
