"""The cancellation token carries why a job stops, to every waiter and child."""

from __future__ import annotations

import threading
import time

import pytest

from exportpipe.common.cancel import CancelToken
from exportpipe.common.errors import JobDeadlineExceeded, JobReleased, LeaseLost


def test_check_raises_the_reason_and_the_first_reason_wins() -> None:
    token = CancelToken()
    token.check()  # not cancelled: nothing happens
    assert token.cancel(JobDeadlineExceeded("ran 3 s, past the 2 s limit"))
    assert not token.cancel(JobReleased("released at shutdown"))
    with pytest.raises(JobDeadlineExceeded) as info:
        token.check()
    assert info.value.reason == "job_deadline_exceeded"
    assert info.value.message == "ran 3 s, past the 2 s limit"
    # Each raise is its own exception object (threads raising at once share nothing).
    with pytest.raises(JobDeadlineExceeded) as again:
        token.check()
    assert again.value is not info.value


def test_sleep_wakes_at_once_with_the_reason() -> None:
    token = CancelToken()
    threading.Timer(0.2, token.cancel, args=(LeaseLost("visibility lost"),)).start()
    started = time.monotonic()
    with pytest.raises(LeaseLost) as info:
        token.sleep(30)
    assert time.monotonic() - started < 5
    assert info.value.reason == "lease_lost"
    assert isinstance(info.value, JobReleased)  # the runtime releases nothing twice


def test_children_follow_their_parent_but_not_the_other_way() -> None:
    parent = CancelToken()
    child = parent.child()
    child.cancel(JobReleased("download abandoned"))
    assert child.cancelled
    assert not parent.cancelled
    other = parent.child()
    parent.cancel(JobDeadlineExceeded("too long"))
    with pytest.raises(JobDeadlineExceeded):
        other.check()
    late = parent.child()  # made after the cancel: born cancelled, same reason
    assert isinstance(late.reason, JobDeadlineExceeded)
