"""The queue consumer runtime both services run on.

A :class:`QueueConsumer` long-polls one SQS queue and runs a handler per message on a
bounded pool of threads:

* **Admission by budget.** With a ``budget`` (and a ``job_cost`` per message), jobs run
  while the sum of their costs fits the budget, at most ``concurrency`` at once: one
  process runs many cheap jobs or few expensive ones (ADR 0015). Without one, every job
  costs one slot of ``concurrency``.
* **Backpressure.** One ``ReceiveMessage`` asks for as many messages as could start now
  (up to ten). A received message that does not fit waits, heartbeated, for budget to
  free up, and nothing more is received meanwhile.
* **Heartbeat.** While a handler runs, its message's visibility is extended every
  ``heartbeat_seconds`` to ``visibility_timeout`` ahead, never past SQS's 12-hour
  ceiling. A job running longer than ``max_job_seconds`` (``EXPORTPIPE_MAX_JOB_SECONDS``,
  kept below that ceiling) has its :class:`~exportpipe.common.cancel.CancelToken`
  cancelled with :class:`~exportpipe.common.errors.JobDeadlineExceeded`: the handler
  raises it, so the job is refused (rejection record, tracking) and dead-lettered with
  its reason. A lost lease cancels with :class:`~exportpipe.common.errors.LeaseLost`.
* **Batched acknowledgements.** Deletes and visibility changes of every job go out
  through one outbox, in batches of up to ten, flushed when a batch is full or its
  oldest entry has waited 0.1 s; entries that fail on SQS's side are retried by
  :func:`send_batch`, on the one partial-failure loop
  (:func:`~exportpipe.common.retry.retry_unfinished`).
* **Outcome by error type.** Return → delete (batched). ``RetryableError`` → the
  message comes back after a backoff visibility (or the upstream's ``Retry-After``,
  capped at ``retry_after_max_seconds``: a hostile header could otherwise hide the
  message for the rest of SQS's 12 hours on every receive).
  ``PermanentError`` → sent to the dead-letter queue with the reason in message
  attributes, then deleted. Any other exception is a bug: retried with backoff. On the
  last receive the redrive policy allows (:attr:`JobContext.final_attempt`), a
  retryable error or a bug is dead-lettered *with its reason* too, instead of being
  handed back for SQS's redrive to move without one: every retry loop ends with a
  named outcome.
* **Graceful shutdown.** :meth:`QueueConsumer.shutdown` stops receiving at once; jobs
  whose expected remaining time (see :meth:`JobContext.set_eta`) fits in the grace
  period may finish; the rest are cancelled and released (visibility 0) immediately so
  another consumer picks them up; deletes are flushed. A message returned by the last
  long poll is released too.

Modules, one concept each: :mod:`~exportpipe.common.sqs.consumer` (the loop, admission,
outcomes, shutdown), :mod:`~exportpipe.common.sqs.lease` (:class:`JobContext`, the
heartbeat), :mod:`~exportpipe.common.sqs.batching` (partial-failure batches, the
outbox), :mod:`~exportpipe.common.sqs.deadletters` (the dead-letter format, written and
read) and :mod:`~exportpipe.common.sqs.queries` (queue depth for operators).
"""

from exportpipe.common.sqs.batching import BatchOutcome, send_batch
from exportpipe.common.sqs.consumer import (
    RETRY_AFTER_MAX_SECONDS,
    ConsumerConfig,
    ConsumerSettings,
    QueueConsumer,
    run_consumer,
)
from exportpipe.common.sqs.deadletters import (
    EARLIER_ATTEMPT_ATTRIBUTES,
    REDRIVEN_ATTRIBUTE,
    dead_letter_attributes,
)
from exportpipe.common.sqs.lease import SQS_MAX_VISIBILITY_SECONDS, JobContext
from exportpipe.common.sqs.queries import QueueDepth, queue_depth

__all__ = [
    "EARLIER_ATTEMPT_ATTRIBUTES",
    "REDRIVEN_ATTRIBUTE",
    "RETRY_AFTER_MAX_SECONDS",
    "SQS_MAX_VISIBILITY_SECONDS",
    "BatchOutcome",
    "ConsumerConfig",
    "ConsumerSettings",
    "JobContext",
    "QueueConsumer",
    "QueueDepth",
    "dead_letter_attributes",
    "queue_depth",
    "run_consumer",
    "send_batch",
]
