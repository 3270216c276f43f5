"""``python -m exportpipe.tools.planner``."""

from exportpipe.tools.planner.command import main

raise SystemExit(main())
