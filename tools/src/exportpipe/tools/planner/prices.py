"""The price table: Fargate and SQS prices the planner turns task-hours and requests into.

Defaults are us-east-1, Linux/x86, on-demand list prices, taken on 2026-11-29. This
machine cannot reach aws.amazon.com, so each figure was read from public pages that
quote the AWS pricing pages and agree with each other; check them against
https://aws.amazon.com/fargate/pricing/ and https://aws.amazon.com/sqs/pricing/ before
quoting a cost, and override any of them (``--price-*`` options).
"""

from __future__ import annotations

from dataclasses import dataclass

from exportpipe.common.sizing import ServiceSizing

__all__ = ["PRICE_SOURCES", "PriceTable"]

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
}


@dataclass(frozen=True, kw_only=True)
class PriceTable:
    """Unit prices in US dollars.

    Attributes:
        vcpu_hour: Fargate on-demand, per vCPU per hour.
        gb_hour: Fargate on-demand, per GB of memory per hour.
        storage_gb_hour: ephemeral storage above the free 20 GiB, per GB per hour.
        spot_discount: Fargate Spot's discount off on-demand (0.7 = 70% cheaper).
        sqs_per_million: SQS standard requests, per million.
    """

    vcpu_hour: float = 0.04048
    gb_hour: float = 0.004445
    storage_gb_hour: float = 0.000111
    spot_discount: float = 0.70
    sqs_per_million: float = 0.40

    def __post_init__(self) -> None:
        if min(self.vcpu_hour, self.gb_hour, self.storage_gb_hour, self.sqs_per_million) < 0:
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
