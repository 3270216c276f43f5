"""The worker's autoscaling on SQS 2 backlog per task, in-flight messages included."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_applicationautoscaling as autoscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from exportpipe.common.sizing import WorkerScaling

__all__ = ["BacklogScaling"]


class BacklogScaling(Construct):
    """Three step-scaling policies on a service's queue backlog.

    The *load ratio* is ``(visible + not visible) / max(running, desired, 1) /
    jobs_per_task`` (CloudWatch metric math; task counts from Container Insights'
    ``RunningTaskCount`` and ``DesiredTaskCount``). Counting in-flight messages keeps
    busy tasks from being scaled in when the queue merely looks empty (aws-cdk #9242),
    and 1.0 means every job slot is busy with nothing waiting. Dividing by the *desired*
    count as well means tasks already asked for count as capacity: when they fail to
    start (a Spot shortage, a crash loop) the ratio does not stay high, so the
    percentage steps (which apply to the desired count) do not compound to the maximum.

    * **scale out**: ``policy.scale_out_steps`` as percent changes (at least
      ``scale_out_min_change`` tasks) after ``scale_out_evaluation_periods``;
    * **scale in**: ``scale_in_percent`` once the ratio stayed at or below
      ``scale_in_below_ratio`` for ``scale_in_evaluation_periods`` (slow on purpose;
      task scale-in protection keeps it off busy tasks);
    * **activation**: ``activation_tasks`` more when no task runs and messages wait,
      which the ratio alone cannot trigger (one waiting message is a ratio of
      ``1 / jobs_per_task``, and a percentage of zero tasks is zero).

    Attributes:
        tasks: ``max(running, desired)`` tasks (for dashboards).
        load_ratio: the load-ratio metric (for dashboards).
        activation: 1 when the fleet is at zero and messages wait, else 0.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        scaling: ecs.ScalableTaskCount,
        queue: sqs.IQueue,
        cluster_name: str,
        service_name: str,
        jobs_per_task: int,
        policy: WorkerScaling,
    ) -> None:
        super().__init__(scope, construct_id)
        period = Duration.seconds(policy.metric_period_seconds)
        visible = queue.metric_approximate_number_of_messages_visible(
            period=period, statistic="Maximum"
        )
        in_flight = queue.metric_approximate_number_of_messages_not_visible(
            period=period, statistic="Maximum"
        )
        running = cloudwatch.Metric(
            namespace="ECS/ContainerInsights",
            metric_name="RunningTaskCount",
            dimensions_map={"ClusterName": cluster_name, "ServiceName": service_name},
            period=period,
            statistic="Average",
        )
        desired = cloudwatch.Metric(
            namespace="ECS/ContainerInsights",
            metric_name="DesiredTaskCount",
            dimensions_map={"ClusterName": cluster_name, "ServiceName": service_name},
            period=period,
            statistic="Average",
        )
        # A service without tasks may publish no task-count datapoint; FILL reads it as 0
        # (ADR 0007 records what the expression does when a whole series is absent).
        self.tasks = cloudwatch.MathExpression(
            expression=(
                "IF(FILL(running, 0) > FILL(desired, 0), FILL(running, 0), FILL(desired, 0))"
            ),
            using_metrics={"running": running, "desired": desired},
            period=period,
            label="Tasks counted as capacity: max(running, desired)",
        )
        self.load_ratio = cloudwatch.MathExpression(
            expression=f"(visible + inFlight) / IF(tasks < 1, 1, tasks) / {jobs_per_task}",
            using_metrics={"visible": visible, "inFlight": in_flight, "tasks": self.tasks},
            period=period,
            label="Worker load ratio (backlog per task / jobs per task)",
        )
        self.activation = cloudwatch.MathExpression(
            expression="IF(FILL(running, 0) < 1 AND visible > 0, 1, 0)",
            using_metrics={"visible": visible, "running": running},
            period=period,
            label="Jobs waiting with no worker running",
        )
        scaling.scale_on_metric(
            "ScaleOutOnBacklog",
            metric=self.load_ratio,
            scaling_steps=[
                autoscaling.ScalingInterval(lower=s.lower, upper=s.upper, change=s.percent)
                for s in policy.scale_out_steps
            ],
            adjustment_type=autoscaling.AdjustmentType.PERCENT_CHANGE_IN_CAPACITY,
            min_adjustment_magnitude=policy.scale_out_min_change,
            evaluation_periods=policy.scale_out_evaluation_periods,
            datapoints_to_alarm=policy.scale_out_evaluation_periods,
            cooldown=Duration.seconds(policy.scale_out_cooldown_seconds),
            metric_aggregation_type=autoscaling.MetricAggregationType.MAXIMUM,
        )
        scaling.scale_on_metric(
            "ScaleInOnBacklog",
            metric=self.load_ratio,
            scaling_steps=[
                autoscaling.ScalingInterval(
                    upper=policy.scale_in_below_ratio, change=policy.scale_in_percent
                ),
                autoscaling.ScalingInterval(lower=policy.scale_in_below_ratio, change=0),
            ],
            adjustment_type=autoscaling.AdjustmentType.PERCENT_CHANGE_IN_CAPACITY,
            # A percentage of a small fleet rounds to zero; always remove at least one.
            min_adjustment_magnitude=1,
            evaluation_periods=policy.scale_in_evaluation_periods,
            datapoints_to_alarm=policy.scale_in_evaluation_periods,
            cooldown=Duration.seconds(policy.scale_in_cooldown_seconds),
            metric_aggregation_type=autoscaling.MetricAggregationType.MAXIMUM,
        )
        scaling.scale_on_metric(
            "ActivateFromZero",
            metric=self.activation,
            scaling_steps=[
                autoscaling.ScalingInterval(upper=1, change=0),
                autoscaling.ScalingInterval(lower=1, change=policy.activation_tasks),
            ],
            adjustment_type=autoscaling.AdjustmentType.CHANGE_IN_CAPACITY,
            evaluation_periods=1,
            datapoints_to_alarm=1,
            cooldown=Duration.seconds(policy.scale_out_cooldown_seconds),
            metric_aggregation_type=autoscaling.MetricAggregationType.MAXIMUM,
        )
