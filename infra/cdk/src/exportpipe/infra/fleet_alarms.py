"""Alarms on one ECS service's fleet: failed tasks, deployments, capacity, the maximum."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_sns as sns
from constructs import Construct

__all__ = ["CAPACITY_GAP_MINUTES", "FleetAlarms"]

CAPACITY_GAP_MINUTES = 10
"""Minutes desired tasks may exceed running ones before the capacity-gap alarm fires."""

_MINUTE = Duration.minutes(1)


class FleetAlarms(Construct):
    """What tells an operator that a service's tasks do not run as asked.

    * **deployment failed**: EventBridge ``ECS Deployment State Change`` with
      ``SERVICE_DEPLOYMENT_FAILED`` for this service (sent when the circuit breaker
      trips) goes to ``alarm_topic``;
    * **task failed**: EventBridge ``ECS Task State Change`` to ``STOPPED`` for a task of
      this service that failed to start, or whose container exited non-zero (a crash, a
      failed health check's kill), except Spot interruptions; ``TasksFailing`` alarms when
      three or more arrive within ten minutes (a crash loop), and each one is also
      published to the topic;
    * **capacity gap** (``CapacityGap``): desired tasks above running tasks for
      :data:`CAPACITY_GAP_MINUTES` minutes (Spot shortage, image pull or start-up
      failures);
    * **at maximum** (``AtMaximum``): desired tasks at ``max_tasks`` for 15 minutes.

    Attributes:
        alarms: the CloudWatch alarms by construct id.
        rules: the EventBridge rules by construct id.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster_name: str,
        cluster_arn: str,
        service_name: str,
        service_arn: str,
        max_tasks: int,
        alarm_topic: sns.ITopic,
    ) -> None:
        super().__init__(scope, construct_id)
        self.alarms: dict[str, cloudwatch.Alarm] = {}
        self.rules: dict[str, events.Rule] = {}
        topic = targets.SnsTopic(alarm_topic)
        self.rules["DeploymentFailed"] = events.Rule(
            self,
            "DeploymentFailed",
            description=f"{service_name}: an ECS deployment failed (circuit breaker)",
            event_pattern=events.EventPattern(
                source=["aws.ecs"],
                detail_type=["ECS Deployment State Change"],
                resources=[service_arn],
                detail={"eventName": ["SERVICE_DEPLOYMENT_FAILED"]},
            ),
            targets=[topic],
        )
        stopped = {"clusterArn": [cluster_arn], "group": [f"service:{service_name}"]}
        stopped["lastStatus"] = ["STOPPED"]
        self.rules["TaskFailedToStart"] = events.Rule(
            self,
            "TaskFailedToStart",
            description=f"{service_name}: a task failed to start",
            event_pattern=events.EventPattern(
                source=["aws.ecs"],
                detail_type=["ECS Task State Change"],
                detail={**stopped, "stopCode": ["TaskFailedToStart"]},
            ),
            targets=[topic],
        )
        self.rules["TaskExitedNonZero"] = events.Rule(
            self,
            "TaskExitedNonZero",
            description=f"{service_name}: a container exited non-zero (not a Spot reclaim)",
            event_pattern=events.EventPattern(
                source=["aws.ecs"],
                detail_type=["ECS Task State Change"],
                detail={
                    **stopped,
                    "stopCode": [{"anything-but": ["SpotInterruption", "TaskFailedToStart"]}],
                    "containers": {"exitCode": [{"anything-but": 0}]},
                },
            ),
            targets=[topic],
        )
        failing = cloudwatch.MathExpression(
            expression="FILL(started, 0) + FILL(exited, 0)",
            using_metrics={
                name: cloudwatch.Metric(
                    namespace="AWS/Events",
                    metric_name="MatchedEvents",
                    dimensions_map={"RuleName": self.rules[rule].rule_name},
                    period=Duration.minutes(10),
                    statistic="Sum",
                )
                for name, rule in (
                    ("started", "TaskFailedToStart"),
                    ("exited", "TaskExitedNonZero"),
                )
            },
            period=Duration.minutes(10),
            label="Tasks failed (to start, or exited non-zero)",
        )
        self._alarm(
            "TasksFailing",
            alarm_topic,
            metric=failing,
            threshold=3,
            evaluation_periods=1,
            description=f"{service_name}: 3+ tasks failed within 10 minutes (crash loop?)",
        )

        def count(metric_name: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace="ECS/ContainerInsights",
                metric_name=metric_name,
                dimensions_map={"ClusterName": cluster_name, "ServiceName": service_name},
                period=_MINUTE,
                statistic="Average",
            )

        self.capacity_gap = cloudwatch.MathExpression(
            expression="FILL(desired, 0) - FILL(running, 0)",
            using_metrics={
                "desired": count("DesiredTaskCount"),
                "running": count("RunningTaskCount"),
            },
            period=_MINUTE,
            label="Desired minus running tasks",
        )
        self._alarm(
            "CapacityGap",
            alarm_topic,
            metric=self.capacity_gap,
            threshold=0,
            evaluation_periods=CAPACITY_GAP_MINUTES,
            description=(
                f"{service_name}: desired tasks above running for {CAPACITY_GAP_MINUTES} min "
                "(Spot shortage, image or start-up failure)"
            ),
        )
        self._alarm(
            "AtMaximum",
            alarm_topic,
            metric=count("DesiredTaskCount").with_(statistic="Maximum"),
            threshold=max_tasks - 0.5,
            evaluation_periods=15,
            description=f"{service_name}: the fleet has been at its maximum ({max_tasks}) 15 min",
        )

    def _alarm(
        self,
        construct_id: str,
        topic: sns.ITopic,
        *,
        metric: cloudwatch.IMetric,
        threshold: float,
        evaluation_periods: int,
        description: str,
    ) -> None:
        alarm = cloudwatch.Alarm(
            self,
            construct_id,
            metric=metric,
            threshold=threshold,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=evaluation_periods,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=description,
        )
        alarm.add_alarm_action(actions.SnsAction(topic))
        alarm.add_ok_action(actions.SnsAction(topic))
        self.alarms[construct_id] = alarm
