"""The price table: Fargate, SQS, S3 and DynamoDB prices for task-hours and requests.

Defaults are us-east-1, Linux/x86, on-demand list prices, taken on 2026-11-29. This
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
        "Fargate Linux/x86 us-east-1 $0.04048 per vCPU-hour: aws.amazon.com/fargate/pricing "
        "as quoted by vantage.sh/blog/fargate-pricing, factualminds.com (June 2026) and "
        "cloudburn.io (March 2026); taken 2026-11-29"
    ),
    "gb_hour": (
        "Fargate Linux/x86 us-east-1 $0.004445 per GB-hour: same sources; taken 2026-11-29"
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
}


@dataclass(frozen=True, kw_only=True)
class RequestsPerFile:
    """S3 and DynamoDB requests one copied file costs (SQS is simulated, not counted here).

    Defaults are what ``bench/small_files.py`` records for a small (one-part) file on its
    first delivery (ADR 0015): the data ``PutObject`` and the manifest ``PutObject``; the
    manifest check and the export manifest's read of the file's manifest; one tracking
    transaction of two items under 1 KB (4 write units). A multipart file adds its
    parts plus two (create, complete).
    """

    s3_put_class: float = 2.0
    s3_get_class: float = 2.0
    dynamodb_write_units: float = 4.0


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
    """

    vcpu_hour: float = 0.04048
    gb_hour: float = 0.004445
    storage_gb_hour: float = 0.000111
    spot_discount: float = 0.70
    sqs_per_million: float = 0.40
    s3_put_per_1000: float = 0.005
    s3_get_per_1000: float = 0.0004
    dynamodb_wru_per_million: float = 0.625

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
        extra_storage = max(0, sizing.ephemeral_storage_gib - FREE_EPHEMERAL_GIB)
        on_demand = (
            sizing.vcpu * self.vcpu_hour
            + sizing.memory_gib * self.gb_hour
            + extra_storage * self.storage_gb_hour
        )
        return on_demand * (1.0 - self.spot_discount) if spot else on_demand

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
