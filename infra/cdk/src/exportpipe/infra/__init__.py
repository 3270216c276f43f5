"""exportpipe's AWS CDK app: a shared stack and one stack per service.

Constructs model (one per unit: queues, bucket, table, topic, cluster, each service,
scaling, monitoring), stacks only compose them, and ``infra/cdk/app.py`` is the only
place that reads the environment. Every size, timeout and scaling number comes from
:mod:`exportpipe.common.sizing`.
"""

from exportpipe.infra.api_token import ApiTokenSecret
from exportpipe.infra.assembly import STACK_NAMES, ExportPipeApp, build_app
from exportpipe.infra.backlog_scaling import BacklogScaling
from exportpipe.infra.cluster import ServiceCluster
from exportpipe.infra.config import ConfigError, InfraConfig
from exportpipe.infra.event_topic import EventTopic
from exportpipe.infra.image_repository import ImageRepository
from exportpipe.infra.monitoring import Monitoring
from exportpipe.infra.network import Network
from exportpipe.infra.orchestrator_service import OrchestratorService
from exportpipe.infra.orchestrator_stack import OrchestratorStack
from exportpipe.infra.output_bucket import OutputBucket
from exportpipe.infra.queue_service import QueueService, capacity_strategy
from exportpipe.infra.shared_stack import SharedResources, SharedStack
from exportpipe.infra.tracking_table import TrackingTable
from exportpipe.infra.work_queue import WorkQueue
from exportpipe.infra.worker_service import WorkerService
from exportpipe.infra.worker_stack import WorkerStack

__all__ = [
    "STACK_NAMES",
    "ApiTokenSecret",
    "BacklogScaling",
    "ConfigError",
    "EventTopic",
    "ExportPipeApp",
    "ImageRepository",
    "InfraConfig",
    "Monitoring",
    "Network",
    "OrchestratorService",
    "OrchestratorStack",
    "OutputBucket",
    "QueueService",
    "ServiceCluster",
    "SharedResources",
    "SharedStack",
    "TrackingTable",
    "WorkQueue",
    "WorkerService",
    "WorkerStack",
    "build_app",
    "capacity_strategy",
]
