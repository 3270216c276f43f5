"""Dashboard and alarms for the pipeline, with an SNS topic for the alarms."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from exportpipe.infra.fair_queues import fair_queue_widgets, quiet_oldest_age
from exportpipe.infra.nag import acknowledge
from exportpipe.infra.work_queue import WorkQueue

__all__ = ["BYTE_METRICS", "JOB_METRICS", "Monitoring"]

JOB_METRICS = {
    "JobsEmitted": "jobs emitted (orchestrator)",
    "FilesCommitted": "files committed (worker)",
    "DeadLettered": "dead-lettered",
}
"""EMF metrics (service-emitted names) on the dashboard's jobs-per-minute graph."""
BYTE_METRICS = {"SourceBytes": "bytes downloaded", "OutputBytes": "bytes written"}
"""EMF metrics on the dashboard's bytes-per-minute graph."""

_MINUTE = Duration.minutes(1)


class Monitoring(Construct):
    """CloudWatch dashboard and alarms over both queues, the cluster and EMF metrics.

    Alarms (each notifies :attr:`alarm_topic` on ALARM and OK):

    * a DLQ holds any message (one per DLQ);
    * a queue's oldest message is older than its ``oldest_message_alarm_seconds``;
    * the oldest message of the queue's *quiet* tenants (fair queues: every tenant but
      the noisy ones, ADR 0018) is older than the same threshold: ordinary tenants
      wait, not just a whale's backlog;
    * the EMF metric ``ExportsStalled`` in ``metrics_namespace`` is above zero, whatever
      its dimensions (a CloudWatch Metrics Insights query, so the alarm does not depend
      on which service emits it or with which dimension set).

    The dashboard shows queue depths, oldest-message ages, DLQ depths, running tasks
    per service (Container Insights) and jobs and bytes per minute (the EMF metrics of
    :data:`JOB_METRICS` and :data:`BYTE_METRICS` in ``metrics_namespace``).

    Attributes:
        alarm_topic: where alarms notify.
        alarms: every alarm, by construct id.
        dashboard: the dashboard.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        queues: dict[str, WorkQueue],
        cluster_name: str,
        metrics_namespace: str,
        alarm_email: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.alarm_topic = sns.Topic(self, "AlarmTopic", enforce_ssl=True)
        acknowledge(
            self.alarm_topic,
            "AwsSolutions-SNS2",
            (
                "Alarm notifications carry alarm names and metric values only, no export "
                "data; CloudWatch cannot publish to a topic under the aws/sns managed key."
            ),
        )
        if alarm_email:
            self.alarm_topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        self.alarms: dict[str, cloudwatch.Alarm] = {}
        for name, work_queue in queues.items():
            self._alarm(
                f"{name}DlqNotEmpty",
                metric=work_queue.dlq.metric_approximate_number_of_messages_visible(
                    period=_MINUTE, statistic="Maximum"
                ),
                threshold=0,
                description=f"{name} DLQ holds messages: inspect and redrive or discard",
            )
            self._alarm(
                f"{name}OldestMessageAge",
                metric=work_queue.queue.metric_approximate_age_of_oldest_message(
                    period=_MINUTE, statistic="Maximum"
                ),
                threshold=work_queue.timing.oldest_message_alarm_seconds,
                description=f"{name} queue: a message waited too long for a consumer",
            )
            self._alarm(
                f"{name}QuietGroupsOldestMessageAge",
                metric=quiet_oldest_age(work_queue.queue, label=None),
                threshold=work_queue.timing.oldest_message_alarm_seconds,
                description=(
                    f"{name} queue: quiet tenants (not the noisy ones) waited too long; "
                    "consumers are short, not just busy with one tenant's backlog"
                ),
            )
        self._alarm(
            "ExportsStalled",
            metric=cloudwatch.MathExpression(
                # Metrics Insights, not SQL: the namespace is our own constant.
                expression=f'SELECT MAX(ExportsStalled) FROM "{metrics_namespace}"',  # noqa: S608
                using_metrics={},
                period=Duration.minutes(5),
                label="ExportsStalled",
            ),
            threshold=0,
            description="An export has made no progress: see the ExportsStalled log records",
        )
        self.dashboard = self._dashboard(queues, cluster_name, metrics_namespace)

    def _alarm(
        self, construct_id: str, *, metric: cloudwatch.IMetric, threshold: float, description: str
    ) -> None:
        alarm = cloudwatch.Alarm(
            self,
            construct_id,
            metric=metric,
            threshold=threshold,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=description,
        )
        alarm.add_alarm_action(actions.SnsAction(self.alarm_topic))
        alarm.add_ok_action(actions.SnsAction(self.alarm_topic))
        self.alarms[construct_id] = alarm

    def _dashboard(
        self, queues: dict[str, WorkQueue], cluster_name: str, namespace: str
    ) -> cloudwatch.Dashboard:
        depth: list[cloudwatch.IMetric] = []
        age: list[cloudwatch.IMetric] = []
        dlq: list[cloudwatch.IMetric] = []
        for name, work_queue in queues.items():
            depth.append(
                work_queue.queue.metric_approximate_number_of_messages_visible(
                    period=_MINUTE, statistic="Maximum", label=f"{name} visible"
                )
            )
            depth.append(
                work_queue.queue.metric_approximate_number_of_messages_not_visible(
                    period=_MINUTE, statistic="Maximum", label=f"{name} in flight"
                )
            )
            age.append(
                work_queue.queue.metric_approximate_age_of_oldest_message(
                    period=_MINUTE, statistic="Maximum", label=f"{name} oldest message (s)"
                )
            )
            dlq.append(
                work_queue.dlq.metric_approximate_number_of_messages_visible(
                    period=_MINUTE, statistic="Maximum", label=f"{name} DLQ"
                )
            )
        running = cloudwatch.MathExpression(
            expression=(
                "SEARCH('{ECS/ContainerInsights,ClusterName,ServiceName} "
                f'MetricName="RunningTaskCount" ClusterName="{cluster_name}"\', '
                "'Average', 60)"
            ),
            using_metrics={},
            label="running tasks",
            period=_MINUTE,
        )

        def per_minute(metric_name: str, label: str) -> cloudwatch.MathExpression:
            # Summed over every dimension set the services emit it with.
            return cloudwatch.MathExpression(
                expression=(
                    f'SUM(SEARCH(\'Namespace="{namespace}" '
                    f"MetricName=\"{metric_name}\"', 'Sum', 60))"
                ),
                using_metrics={},
                label=label,
                period=_MINUTE,
            )

        dashboard = cloudwatch.Dashboard(self, "Dashboard", default_interval=Duration.hours(3))
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Queue depth", left=depth, width=12),
            cloudwatch.GraphWidget(title="Oldest message age (s)", left=age, width=12),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="DLQ depth", left=dlq, width=8),
            cloudwatch.GraphWidget(title="Running tasks", left=[running], width=8),
            cloudwatch.AlarmStatusWidget(
                title="Alarms", alarms=list(self.alarms.values()), width=8
            ),
        )
        for name, work_queue in queues.items():
            dashboard.add_widgets(
                *fair_queue_widgets(
                    work_queue.queue,
                    name=name,
                    alarm_seconds=work_queue.timing.oldest_message_alarm_seconds,
                )
            )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Jobs per minute",
                left=[per_minute(name, label) for name, label in JOB_METRICS.items()],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Bytes per minute",
                left=[per_minute(name, label) for name, label in BYTE_METRICS.items()],
                width=12,
            ),
        )
        return dashboard
