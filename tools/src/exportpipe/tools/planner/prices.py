"""The price table: Fargate, SQS, S3 and DynamoDB prices for task-hours and requests.

Defaults are us-east-1, Linux/ARM (Graviton: both services run ARM64, on demand and on
Fargate Spot), on-demand list prices, taken on 2026-11-29. This
machine cannot reach aws.amazon.com, so each figure was read from public pages that
quote the AWS pricing pages and agree with each other; check them against
https://aws.amazon.com/fargate/pricing/ and https://aws.amazon.com/sqs/pricing/ before
quoting a cost, and override any of them (``--price-*`` options).
"""

from __future__ import annotations

from dataclasses import dataclass

from exportpipe.common.sizing import ServiceSizing

__all__ = ["PRICE_SOURCES", "PriceTable", "RequestsPerFile"]

FREE_EPHEMERAL_GIB = 20
"""Fargate includes 20 GiB of ephemeral storage per task; only the excess is billed."""

PRICE_SOURCES: dict[str, str] = {
    "vcpu_hour": (
        "Fargate Linux/ARM us-east-1 $0.03238 per vCPU-hour (x86: $0.04048): "
        "aws.amazon.com/fargate/pricing as quoted by vantage.sh/blog/fargate-pricing and "
        "cloudburn.io/blog/aws-fargate-pricing (March 2026; 'Graviton ~20% lower' in "
        "factualminds.com, June 2026); taken 2026-11-29"
    ),
    "gb_hour": (
        "Fargate Linux/ARM us-east-1 $0.00356 per GB-hour (x86: $0.004445): same sources; "
        "taken 2026-11-29"
    ),
    "storage_gb_hour": (
        "Fargate ephemeral storage above 20 GB $0.000111 per GB-hour: same sources "
        "(vantage.sh); taken 2026-11-29"
    ),
    "spot_discount": (
        "Fargate Spot 70% below on-demand: AWS's 'up to 70%' (the live Spot table on "
        "aws.amazon.com/fargate/pricing moves between ~50% and 70%), also the analysis's "
        "figure; taken 2026-11-29"
    ),
    "sqs_per_million": (
        "SQS standard queue $0.40 per million requests (each 64 KB chunk is a request; the "
        "first 1M requests a month are free and ignored here): aws.amazon.com/sqs/pricing "
        "as quoted by cloudburn.io (March 2026) and factualminds.com (June 2026); "
        "taken 2026-11-29"
    ),
    "s3_put_per_1000": (
        "S3 Standard PUT, COPY, POST, LIST requests $0.005 per 1,000 (us-east-1), "
        "aws.amazon.com/s3/pricing; DELETE and abort are free; taken 2026-11-30"
    ),
    "s3_get_per_1000": (
        "S3 Standard GET, SELECT and other requests $0.0004 per 1,000 (us-east-1), "
        "aws.amazon.com/s3/pricing; taken 2026-11-30"
    ),
    "dynamodb_wru_per_million": (
        "DynamoDB on-demand $0.625 per million write request units (us-east-1; a "
        "transactional write costs 2 units per KB per item), "
        "aws.amazon.com/dynamodb/pricing/on-demand; taken 2026-11-30"
    ),
    "public_ipv4_hour": (
        "Public IPv4 address $0.005 per hour, every in-use address since 2024-02-01 (each "
        "task in a public subnet has one): aws.amazon.com/vpc/pricing as quoted by the AWS "
        "networking blog 'Identify and optimize public IPv4 address usage on AWS' and "
        "doit.com; taken 2026-11-29"
    ),
    "container_insights": (
        "Container Insights (standard): its metrics are billed as CloudWatch custom metrics, "
        "$0.30 per metric-month (first 10,000; ECS developer guide 'Container Insights'), "
        "and its performance log events as log ingestion, $0.50 per GB. The metric count "
        "(~60: cluster, two services, two task families) and ~2 KB of performance events per "
        "task-minute are this planner's estimates: confirm them on a real account "
        "(infra/cdk/README.md); taken 2026-11-29"
    ),
}


@dataclass(frozen=True, kw_only=True)
class RequestsPerFile:
    """S3 and DynamoDB requests one copied file costs (SQS is simulated, not counted here).

    Defaults are what ``bench/small_files.py`` records for a small (one-part) file on its
    first delivery (ADR 0015): the data ``PutObject`` and the manifest ``PutObject``; the
    manifest check and the export manifest's read of the file's manifest; one tracking
    transaction of two items under 1 KB (the outcome onto the file's ``LISTED#`` item,
    and META: 4 write units) and that ``LISTED#`` item's conditional put at listing (1).
    A multipart file adds its parts plus two (create, complete).
    """

    s3_put_class: float = 2.0
    s3_get_class: float = 2.0
    dynamodb_write_units: float = 5.0


@dataclass(frozen=True, kw_only=True)
class PriceTable:
    """Unit prices in US dollars.

    Attributes:
        vcpu_hour: Fargate on-demand, per vCPU per hour.
        gb_hour: Fargate on-demand, per GB of memory per hour.
        storage_gb_hour: ephemeral storage above the free 20 GiB, per GB per hour.
        spot_discount: Fargate Spot's discount off on-demand (0.7 = 70% cheaper).
        sqs_per_million: SQS standard requests, per million.
        s3_put_per_1000 / s3_get_per_1000: S3 PUT-class (PUT, COPY, POST, LIST) and
            GET-class requests, per thousand.
        dynamodb_wru_per_million: DynamoDB on-demand write request units, per million.
        public_ipv4_hour: one public IPv4 address for one hour (a task in a public subnet).
        metric_month: one CloudWatch custom metric for a month (Container Insights).
        container_insights_metrics: metrics Container Insights publishes for the cluster.
        log_ingest_gb: CloudWatch Logs ingestion, per GB (performance log events).
        container_insights_kb_per_task_minute: performance log events per running task.
    """

    vcpu_hour: float = 0.03238
    gb_hour: float = 0.00356
    storage_gb_hour: float = 0.000111
    spot_discount: float = 0.70
    sqs_per_million: float = 0.40
    s3_put_per_1000: float = 0.005
    s3_get_per_1000: float = 0.0004
    dynamodb_wru_per_million: float = 0.625
    public_ipv4_hour: float = 0.005
    metric_month: float = 0.30
    container_insights_metrics: float = 60.0
    log_ingest_gb: float = 0.50
    container_insights_kb_per_task_minute: float = 2.0

    def __post_init__(self) -> None:
        if (
            min(
                self.vcpu_hour,
                self.gb_hour,
                self.storage_gb_hour,
                self.sqs_per_million,
                self.s3_put_per_1000,
                self.s3_get_per_1000,
                self.dynamodb_wru_per_million,
            )
            < 0
        ):
            raise ValueError("prices must be >= 0")
        if not 0.0 <= self.spot_discount < 1.0:
            raise ValueError(f"spot_discount must be in [0, 1), got {self.spot_discount}")

    def task_hour(self, sizing: ServiceSizing, *, spot: bool = False) -> float:
        """Dollars for one task of ``sizing`` running one hour (on Spot if ``spot``)."""
        on_demand = (
            sizing.vcpu * self.vcpu_hour
            + sizing.memory_gib * self.gb_hour
            + self.storage_hour(sizing)
        )
        return on_demand * (1.0 - self.spot_discount) if spot else on_demand

    def storage_hour(self, sizing: ServiceSizing, *, spot: bool = False) -> float:
        """The ephemeral-storage part of :meth:`task_hour` (storage above the free 20 GiB)."""
        extra = max(0, sizing.ephemeral_storage_gib - FREE_EPHEMERAL_GIB) * self.storage_gb_hour
        return extra * (1.0 - self.spot_discount) if spot else extra

    def public_ipv4(self, task_hours: float) -> float:
        """Dollars for the public IPv4 addresses of ``task_hours`` (one per task)."""
        return task_hours * self.public_ipv4_hour

    def container_insights(self, task_hours: float, *, days: float) -> float:
        """Dollars of Container Insights over ``days`` with ``task_hours`` of tasks running."""
        metrics = self.container_insights_metrics * self.metric_month * days * 12 / 365
        events_gb = task_hours * 60 * self.container_insights_kb_per_task_minute / 1024**2
        return metrics + events_gb * self.log_ingest_gb

    def sqs(self, requests: int) -> float:
        """Dollars for ``requests`` SQS standard-queue requests."""
        return requests * self.sqs_per_million / 1e6

    def file_requests(self, files: int, per_file: RequestsPerFile | None = None) -> float:
        """Dollars for the S3 and DynamoDB requests of copying ``files`` files."""
        r = per_file or RequestsPerFile()
        return files * (
            r.s3_put_class * self.s3_put_per_1000 / 1000
            + r.s3_get_class * self.s3_get_per_1000 / 1000
            + r.dynamodb_write_units * self.dynamodb_wru_per_million / 1e6
        )
