"""What SQS fair queues publish, as CloudWatch metrics and dashboard widgets.

Both queues carry ``MessageGroupId`` = tenant on every message (ADR 0018), which makes
them fair queues. SQS then publishes, in ``AWS/SQS`` per ``QueueName``:

* ``ApproximateNumberOfNoisyGroups``: tenants SQS currently treats as noisy (over 10 %
  of in-flight messages with at least 30 of their own, or over 10 % of recent
  processing time);
* ``ApproximateAgeOfOldestMessageInQuietGroups`` (and ``…VisibleInQuietGroups``): the
  oldest message and the backlog *excluding* noisy tenants, i.e. what every other
  tenant experiences while a whale export is being worked off.

The queue-wide ``ApproximateAgeOfOldestMessage`` rises with any whale; the quiet-group
age only rises when ordinary tenants wait, so it is the one that pages someone.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_sqs as sqs

__all__ = [
    "NOISY_GROUPS",
    "QUIET_OLDEST_AGE",
    "QUIET_VISIBLE",
    "fair_queue_widgets",
    "noisy_groups",
    "quiet_oldest_age",
    "quiet_visible",
]

NOISY_GROUPS = "ApproximateNumberOfNoisyGroups"
QUIET_OLDEST_AGE = "ApproximateAgeOfOldestMessageInQuietGroups"
QUIET_VISIBLE = "ApproximateNumberOfMessagesVisibleInQuietGroups"

_MINUTE = Duration.minutes(1)


def _maximum(queue: sqs.IQueue, name: str, label: str | None) -> cloudwatch.Metric:
    # An alarm on a labelled metric is rendered as a metric-math query; pass no label
    # for alarms so they keep the plain Namespace/MetricName form.
    return queue.metric(name, period=_MINUTE, statistic="Maximum", label=label)


def noisy_groups(queue: sqs.IQueue, *, label: str | None = "noisy tenants") -> cloudwatch.Metric:
    """``ApproximateNumberOfNoisyGroups`` of ``queue``, per-minute maximum."""
    return _maximum(queue, NOISY_GROUPS, label)


def quiet_oldest_age(
    queue: sqs.IQueue, *, label: str | None = "quiet tenants' oldest message (s)"
) -> cloudwatch.Metric:
    """``ApproximateAgeOfOldestMessageInQuietGroups`` of ``queue``, per-minute maximum."""
    return _maximum(queue, QUIET_OLDEST_AGE, label)


def quiet_visible(
    queue: sqs.IQueue, *, label: str | None = "quiet tenants' visible messages"
) -> cloudwatch.Metric:
    """``ApproximateNumberOfMessagesVisibleInQuietGroups`` of ``queue``, per-minute maximum."""
    return _maximum(queue, QUIET_VISIBLE, label)


def fair_queue_widgets(
    queue: sqs.IQueue, *, name: str, alarm_seconds: float, width: int = 24
) -> list[cloudwatch.IWidget]:
    """Two graphs for one fair queue: who is noisy, and how long everyone else waits.

    Args:
        queue: the queue.
        name: how the titles call it (``SQS 2 (jobs)``).
        alarm_seconds: the oldest-message threshold, drawn on the age graph.
        width: total width of the two graphs (dashboard grid units).
    """
    half = width // 2
    return [
        cloudwatch.GraphWidget(
            title=f"{name}: noisy tenants and quiet tenants' backlog",
            left=[noisy_groups(queue)],
            right=[quiet_visible(queue)],
            width=half,
        ),
        cloudwatch.GraphWidget(
            title=f"{name}: quiet tenants' oldest message (s)",
            left=[
                quiet_oldest_age(queue),
                queue.metric_approximate_age_of_oldest_message(
                    period=_MINUTE, statistic="Maximum", label="oldest message, all tenants (s)"
                ),
            ],
            left_annotations=[cloudwatch.HorizontalAnnotation(value=alarm_seconds, label="alarm")],
            width=width - half,
        ),
    ]
