"""``python -m exportpipe.tools.simulator``: run the simulator as its own process.

Prints one JSON line ``{"url": ..., "token": ...}`` on stdout once it listens (and writes
it to ``--url-file`` if given), so a parent that asked for ``--port 0`` learns the port;
stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from pydantic import TypeAdapter, ValidationError

from exportpipe.tools.simulator.server import DEFAULT_TOKEN, SimulatorServer
from exportpipe.tools.simulator.spec import ExportSpec, SimulatorConfig

__all__ = ["load_config", "main"]

_EXPORT_LIST = TypeAdapter(list[ExportSpec])


def load_config(path: Path) -> SimulatorConfig:
    """Read a :class:`SimulatorConfig`, a list of exports, or one export from ``path``."""
    raw = json.loads(path.read_text())
    if isinstance(raw, list):
        return SimulatorConfig(exports=tuple(_EXPORT_LIST.validate_python(raw)))
    if isinstance(raw, dict) and "export_id" in raw:
        return SimulatorConfig(exports=(ExportSpec.model_validate(raw),))
    return SimulatorConfig.model_validate(raw)


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until signalled; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m exportpipe.tools.simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--exports", type=Path, help="JSON: SimulatorConfig, or export(s)")
    parser.add_argument("--token", help="bearer token (overrides the file's)")
    parser.add_argument("--no-auth", action="store_true", help="accept requests without a token")
    parser.add_argument("--files-base-url", help="base URL of listed file URLs")
    parser.add_argument("--url-file", type=Path, help="also write the URL line here")
    args = parser.parse_args(argv)

    try:
        config = load_config(args.exports) if args.exports else SimulatorConfig()
    except (OSError, ValueError, ValidationError) as exc:
        print(f"simulator: cannot read {args.exports}: {exc}", file=sys.stderr)
        return 2
    token = None if args.no_auth else (args.token or config.token or DEFAULT_TOKEN)
    server = SimulatorServer(
        config.exports,
        token=token,
        host=args.host,
        port=args.port,
        files_base_url=args.files_base_url or config.files_base_url,
    )
    server.inject(*config.faults)

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    line = json.dumps({"url": server.url, "token": token})
    if args.url_file:
        args.url_file.write_text(line + "\n")
    print(line, flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
