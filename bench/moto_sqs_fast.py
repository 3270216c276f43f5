"""``python -m bench.moto_sqs_fast -H 127.0.0.1 -p PORT``: moto.server with the SQS patches.

The patches live in :mod:`exportpipe.testing.moto_patches` (also used by the
test and local-stack moto server); this entry point runs plain ``moto.server`` with
them, for benchmarks that compare against ``--plain-moto``.
"""

from __future__ import annotations

import sys

from exportpipe.testing.moto_patches import patch_sqs as patch

__all__ = ["main", "patch"]


def main() -> None:
    """Run moto.server with the SQS patches applied."""
    patch()
    from moto.server import main as moto_main

    moto_main(sys.argv[1:])


if __name__ == "__main__":
    main()
