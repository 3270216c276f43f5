"""Fault-injection run with a loss ledger (``make faults``; see ``bench/faults/README.md``).

A long mixed export goes through the local stack (one orchestrator, several worker
processes, a moto server behind a fault-injecting proxy, the Export API simulator) while
a seeded schedule kills and stops processes, makes the Export API fail, slow and cut
downloads, duplicates jobs, poisons both queues and fails S3/SQS/DynamoDB calls. The
ledger then reconciles every listed file against S3, the tracking table and the DLQs.
"""

from bench.faults.ledger import Ledger, Row
from bench.faults.run import Options, plan_run, run

__all__ = ["Ledger", "Options", "Row", "plan_run", "run"]
