"""Test support shared by every member's tests: a real moto server and queue helpers.

Not used by the services at run time. Lives in the shared library so that member test
suites and the end-to-end suite start the same moto server the same way.
"""

from exportpipe.testing.moto import MotoServer, create_queue_pair, free_port
from exportpipe.testing.proxy import Fault, FaultProxy, Request

__all__ = ["Fault", "FaultProxy", "MotoServer", "Request", "create_queue_pair", "free_port"]
