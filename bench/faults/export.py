"""The long mixed export the fault run copies, and the reason each bad file must get.

Every file is listed explicitly (``file-0000``...), so sizes can vary: most files are
small, some medium, and a few large enough that a throttled download keeps a job busy
for many seconds (a kill then lands in the middle of a download or a multipart upload).
A few files are bad on purpose (see :data:`CORRUPTIONS`); a few good ones leave out
their compression, sha256 or size in the listing, or are truncated on their first
downloads. Everything is drawn from ``random.Random(seed)``: same seed, same export.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from exportpipe.tools.simulator import (
    ALL_KINDS,
    KIND_INFO,
    ExportSpec,
    FileKind,
    FileSpec,
    RandomFaults,
)

__all__ = [
    "API_LATENCY_SECONDS",
    "CORRUPTIONS",
    "DOWNLOAD_BYTES_PER_SECOND",
    "ExportPlan",
    "accepted_reasons",
    "build_export",
]

DOWNLOAD_BYTES_PER_SECOND = 512 * 1024
"""Every download is served at this rate, so a large file takes many seconds."""

API_LATENCY_SECONDS = 1.0
"""Every Export API call and download starts answering after this long, as a distant
vendor does. It spreads the listing (one page per orchestrator message) over much of the
run, so orchestrator kills and listing faults land mid-listing, and it keeps SQS 2 short
(the moto server's SQS slows down as a queue grows)."""

PAGE_SIZE = 10
"""Files per page the orchestrator asks for (``EXPORTPIPE_PAGE_SIZE``). The simulator
itself would serve up to 1000, so the run can read the whole listing in one call."""

_KIB, _MIB = 1024, 1024 * 1024
_GOOD_KINDS: tuple[FileKind, ...] = ALL_KINDS  # every kind the simulator makes
_LARGE_KINDS: tuple[FileKind, ...] = ("bin", "jsonl.gz", "csv.tar", "jsonl.zst", "jsonl")
_BOMB_BYTES = 64 * _MIB

CORRUPTIONS: tuple[tuple[str, FileKind], ...] = (
    ("flip_byte", "bin"),
    ("bad_record", "jsonl.gz"),
    ("path_escape", "csv.zip"),
    ("bomb", "jsonl.gz"),
    ("flip_byte", "jsonl.gz"),
    ("bad_record", "csv"),
    ("path_escape", "jsonl.tar.gz"),
    ("flip_byte", "csv.tar"),
    ("bomb", "csv.zip"),
    ("bad_record", "jsonl.zst"),
)
"""Bad files, in the order they are added (a short run gets the first three)."""

# A flipped byte inside compressed or text content is usually noticed by the
# decompressor or the validator before the end-of-file sha256 check runs; any of these
# names the damage correctly. Only a raw binary file has nothing to trip over first.
_DAMAGED = frozenset(
    {
        "sha256_mismatch",
        "size_mismatch",
        "truncated",
        "corrupt_compressed_data",
        "corrupt_archive",
        "trailing_garbage",  # a flip in a tar's zero padding, after its end marker
        "invalid_jsonl",
        "invalid_csv",
        "csv_field_count",
        "csv_no_header",
        "not_utf8",
    }
)


def accepted_reasons(spec: FileSpec) -> frozenset[str]:
    """The rejection reasons that correctly name what is wrong with a corrupt file."""
    fmt = spec.info.format
    if spec.corrupt == "flip_byte":
        return frozenset({"sha256_mismatch"}) if fmt == "binary" else _DAMAGED
    if spec.corrupt == "bad_record":
        return frozenset({"invalid_jsonl"}) if fmt == "jsonl" else frozenset({"csv_field_count"})
    if spec.corrupt == "path_escape":
        return frozenset({"path_escape"})
    if spec.corrupt == "bomb":
        # A bomb of zeros is one endless "line": in JSONL or CSV the line-length limit
        # (8 MiB) trips before the ratio check starts (after 16 MiB of output).
        line = {"jsonl": "invalid_jsonl", "csv": "csv_record_too_long"}.get(fmt)
        return frozenset({"compression_ratio", "output_too_large", *([line] if line else [])})
    return frozenset()


@dataclass(frozen=True)
class ExportPlan:
    """The export and what is special about its files.

    Attributes:
        spec: what the simulator serves.
        large: ids of the large files (targets of mid-download connection drops).
        corrupt: ids of the deliberately bad files.
    """

    spec: ExportSpec
    large: tuple[str, ...]
    corrupt: tuple[str, ...]

    @property
    def count(self) -> int:
        """Files listed."""
        return self.spec.count

    @property
    def pages(self) -> int:
        """Pages of the listing."""
        return -(-self.spec.count // PAGE_SIZE)

    @property
    def listing_seconds(self) -> float:
        """Roughly how long the orchestrator takes to list every page, fault-free."""
        return self.pages * (API_LATENCY_SECONDS + 0.3) + API_LATENCY_SECONDS


def _size(rng: random.Random, tier: str) -> int:
    if tier == "large":
        return rng.randint(3 * _MIB, 8 * _MIB)
    if tier == "medium":
        return rng.randint(128 * _KIB, 1 * _MIB)
    return rng.randint(4 * _KIB, 48 * _KIB)


def build_export(seed: int, files: int) -> ExportPlan:
    """``files`` files: ~4% large, ~12% medium, the rest small; ~4% corrupt (at least 3).

    Raises:
        ValueError: fewer than 10 files.
    """
    if files < 10:
        raise ValueError("--files must be at least 10")
    rng = random.Random(seed)
    n_corrupt = max(3, round(files * 0.04))
    n_large = max(1, round(files * 0.04))
    n_medium = round(files * 0.12)
    slots = list(range(files))
    rng.shuffle(slots)
    corrupt_at = set(slots[:n_corrupt])
    large_at = set(slots[n_corrupt : n_corrupt + n_large])
    medium_at = set(slots[n_corrupt + n_large : n_corrupt + n_large + n_medium])
    specs: list[FileSpec] = []
    corrupt_ids: list[str] = []
    large_ids: list[str] = []
    n_bad = 0
    for i in range(files):
        file_id = f"file-{i:04d}"
        options: dict[str, object] = {"seed": rng.getrandbits(48)}
        if i in corrupt_at:
            corruption, kind = CORRUPTIONS[n_bad % len(CORRUPTIONS)]
            n_bad += 1
            options.update(corrupt=corruption, size_bytes=_size(rng, "small"))
            if corruption == "bomb":
                options["bomb_bytes"] = _BOMB_BYTES
            corrupt_ids.append(file_id)
        elif i in large_at:
            kind = rng.choice(_LARGE_KINDS)
            options["size_bytes"] = _size(rng, "large")
            large_ids.append(file_id)
        else:
            kind = rng.choice(_GOOD_KINDS)
            options["size_bytes"] = _size(rng, "medium" if i in medium_at else "small")
            # Listings that leave things out, and flaky first downloads, on good files.
            roll = rng.random()
            if roll < 0.05 and KIND_INFO[kind].compression != "none":
                options["declare_compression"] = False
            elif roll < 0.08:
                options["declare_sha256"] = False
            elif roll < 0.11:
                options["declare_size"] = False
            elif roll < 0.14:
                options["truncate_times"] = rng.randint(1, 2)
        if KIND_INFO[kind].archive:
            options["members"] = rng.randint(1, 4)
        specs.append(
            FileSpec.model_validate(
                {
                    "file_id": file_id,
                    "name": f"part-{i:04d}{KIND_INFO[kind].suffix}",
                    "kind": kind,
                    **options,
                }
            )
        )
    spec = ExportSpec(
        export_id=f"faults-s{seed}",
        seed=seed,
        files=tuple(specs),
        page_size=1000,
        faults=RandomFaults(
            seed=seed,
            download_bytes_per_second=DOWNLOAD_BYTES_PER_SECOND,
            slow_seconds=API_LATENCY_SECONDS,
        ),
    )
    return ExportPlan(spec=spec, large=tuple(large_ids), corrupt=tuple(corrupt_ids))
