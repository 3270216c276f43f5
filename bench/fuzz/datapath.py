"""Coverage-guided fuzzing of the worker's extract + validate path (atheris, libFuzzer).

    uv run --locked --with atheris python -m bench.fuzz.datapath --minutes 5

The first byte of each input picks the declared compression (detect, none, gzip, zstd,
tar, tar.gz, zip), the second the content format (binary, jsonl, csv); the rest is the
file. The property is the one the hypothesis suite checks
(``services/worker/tests/test_datapath_properties.py``, whose reference decoders this
target loads): what the data path accepts equals what stdlib gzip/tarfile/zipfile,
zstandard's frame decoder, csv (strict) and json yield, and anything it refuses is a
classified ``ExportPipeError``. Any other exception, a disagreement, an input slower
than ``--timeout`` seconds or a process above ``--rss-mb`` is a finding: libFuzzer
stops and writes the input to ``crash-*`` / ``timeout-*`` / ``oom-*`` in the work
directory (``--work``, default a new temporary directory), beside ``corpus/``.

Seeds: real archives written by other tools (``bench/fuzz/seeds``; the worker's test
archives under ``services/worker/tests/data``), each written into the working corpus
with all three format selectors and declared both "detect" and as its own kind.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path
from typing import Any

import atheris

REPO = Path(__file__).resolve().parents[2]
PROPERTIES = REPO / "services" / "worker" / "tests" / "test_datapath_properties.py"
SEED_DIRS = [
    REPO / "bench" / "fuzz" / "seeds",
    REPO / "services" / "worker" / "tests" / "data" / "real",
    REPO / "services" / "worker" / "tests" / "data" / "cpython",
]
COMPRESSIONS: list[str | None] = [None, "none", "gzip", "zstd", "tar", "tar.gz", "zip"]
FORMATS = ["binary", "jsonl", "csv"]
_SUFFIXES = {
    ".tar.gz": "tar.gz",
    ".tgz": "tar.gz",
    ".gz": "gzip",
    ".zst": "zstd",
    ".tar": "tar",
    ".zip": "zip",
    ".whl": "zip",
    ".jar": "zip",
}


# Coverage is collected from these (the data path and the stdlib decoders it drives).
INSTRUMENTED = ["exportpipe", "tarfile", "zipfile", "gzip", "csv", "json", "datapath_properties"]


def _load_properties() -> Any:
    """The property module (reference decoders and ``check``), instrumented."""
    loaded = [name for name in INSTRUMENTED if name in sys.modules]
    if loaded:
        print(f"already imported, so not instrumented: {loaded}", flush=True)
    with atheris.instrument_imports(include=INSTRUMENTED):
        spec = importlib.util.spec_from_file_location("datapath_properties", PROPERTIES)
        if spec is None or spec.loader is None:
            raise SystemExit(f"cannot load {PROPERTIES}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def _declared(name: str) -> str | None:
    for suffix, compression in _SUFFIXES.items():
        if name.endswith(suffix):
            return compression
    return None


def write_seeds(corpus: Path) -> int:
    """Each seed file, prefixed with selector bytes, into ``corpus``; returns the count."""
    count = 0
    for directory in SEED_DIRS:
        for path in sorted(directory.iterdir()):
            if not path.is_file() or path.suffix == ".md":
                continue
            data = path.read_bytes()
            kinds = {None, _declared(path.name)}
            for kind in kinds:
                for fmt in range(len(FORMATS)):
                    selector = bytes([COMPRESSIONS.index(kind), fmt])
                    (corpus / f"{path.name}.{kind}.{FORMATS[fmt]}").write_bytes(selector + data)
                    count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="total fuzzing time")
    parser.add_argument("--work", type=Path, help="corpus and findings (default: a temp dir)")
    parser.add_argument("--timeout", type=int, default=10, help="seconds per input")
    parser.add_argument("--rss-mb", type=int, default=2048, help="memory limit")
    parser.add_argument("libfuzzer", nargs="*", help="extra libFuzzer flags (-jobs=2 ...)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="exportpipe-fuzz-"))
    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    print(f"work: {work} ({write_seeds(corpus)} seeds written)", flush=True)
    properties = _load_properties()

    def one_input(data: bytes) -> None:
        if len(data) < 2:
            return
        compression = COMPRESSIONS[data[0] % len(COMPRESSIONS)]
        fmt = FORMATS[data[1] % len(FORMATS)]
        properties.check(data[2:], compression, fmt)

    atheris.Setup(
        [
            sys.argv[0],
            f"-max_total_time={int(args.minutes * 60)}",
            f"-timeout={args.timeout}",
            f"-rss_limit_mb={args.rss_mb}",
            "-max_len=262144",
            "-print_final_stats=1",
            f"-artifact_prefix={work}/",
            *args.libfuzzer,
            str(corpus),
        ],
        one_input,
    )
    atheris.Fuzz()


if __name__ == "__main__":
    main()
