"""The loss ledger: every listed file reconciled against S3, the tracking table and the DLQs.

For each file of the simulator's listing (the truth: the export spec says which files
are corrupt and how):

* a good file must have landed byte-exact (its manifest names exactly the source's
  content and every object it names has those bytes), and nothing else may be under its
  ``data/`` prefix;
* a corrupt file must have a rejection record whose reason names its damage
  (:func:`bench.faults.export.accepted_reasons`), no manifest, nothing under ``data/``,
  and at least one dead letter on SQS 2's DLQ with that reason;
* the tracking table must count it exactly once with the same outcome, and the export
  must be completed once: one ``_manifest.json``, one ``ExportCompleted`` event.

Every hostile message the run injected must be in a DLQ with the reason its kind calls
for; any other dead letter is unexplained. Figures marked *must be 0* decide the exit
status (:attr:`Ledger.failures`).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from botocore.exceptions import ClientError

from bench.faults.export import ExportPlan, accepted_reasons
from bench.faults.fleet import Exit, Fleet
from bench.faults.messages import Injected
from exportpipe.common.layout import ExportKeys, export_root
from exportpipe.common.sqs import queue_depth
from exportpipe.tools.context import Stack
from exportpipe.tools.dlq import list_dead_letters
from exportpipe.tools.verify import verify_export

if TYPE_CHECKING:
    from bench.faults.run import Options

__all__ = ["Ledger", "Observed", "Row", "reconcile"]

_SERVICE_LOG_PREFIXES = ("worker", "orchestrator")


@dataclass
class Observed:
    """What the run saw and did, handed to :func:`reconcile`."""

    started: float
    export_seconds: float | None
    scheduled: Counter[str]
    injected: Counter[str]
    skipped: Counter[str]
    hostile: list[Injected]
    duplicates_sent: int
    aws_hits: Counter[str]
    simulator_requests: list[dict[str, Any]]
    fleet: Fleet
    log_dir: Path
    secrets: tuple[str, ...]
    state_dir: Path


@dataclass(frozen=True)
class Row:
    """One figure of the ledger.

    Attributes:
        key: its name in the JSON output.
        label: what the printed ledger calls it.
        value: the figure (a number, or text for composite figures).
        must_be_zero: a non-zero value fails the run.
        details: what the figure counts, one line each (printed under it).
    """

    key: str
    label: str
    value: Any
    must_be_zero: bool = False
    details: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        """A must-be-zero figure that is not zero."""
        return self.must_be_zero and self.value != 0


@dataclass
class Ledger:
    """The reconciled figures of one run, in sections."""

    seed: int
    export_id: str
    sections: list[tuple[str, list[Row]]] = field(default_factory=list)
    state_dir: Path | None = None

    @property
    def rows(self) -> list[Row]:
        """Every figure."""
        return [row for _, rows in self.sections for row in rows]

    @property
    def failures(self) -> list[Row]:
        """The must-be-zero figures that are not zero."""
        return [row for row in self.rows if row.failed]

    def value(self, key: str) -> Any:
        """The value of figure ``key``."""
        return next(row.value for row in self.rows if row.key == key)

    def format(self, *, max_details: int = 20) -> str:
        """The printed ledger."""
        width = max(len(row.label) for row in self.rows) + 2
        lines = [f"LEDGER  seed {self.seed}  export {self.export_id}"]
        for title, rows in self.sections:
            lines.append(title)
            for row in rows:
                mark = ""
                if row.must_be_zero:
                    mark = "  FAIL (must be 0)" if row.failed else "  ok (must be 0)"
                lines.append(f"  {row.label:<{width}}{row.value}{mark}")
                shown = row.details[:max_details]
                lines += [f"      {d}" for d in shown]
                if len(row.details) > len(shown):
                    lines.append(f"      ... and {len(row.details) - len(shown)} more")
        verdict = (
            "PASS: every must-be-zero figure is zero"
            if not self.failures
            else "FAIL: " + ", ".join(row.key for row in self.failures)
        )
        lines.append(verdict)
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """Every figure by key, with details, and the failures."""
        return {
            "seed": self.seed,
            "export_id": self.export_id,
            "figures": {row.key: row.value for row in self.rows},
            "details": {row.key: list(row.details) for row in self.rows if row.details},
            "failures": [row.key for row in self.failures],
            "state_dir": str(self.state_dir) if self.state_dir else None,
        }


# ------------------------------------------------------------------------ S3


def _keys(s3: Any, bucket: str, prefix: str) -> set[str]:
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.update(obj["Key"] for obj in page.get("Contents", []))
    return keys


def _json_object(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError:
        return None
    value = orjson.loads(body)
    return value if isinstance(value, dict) else None


def _open_uploads(s3: Any, bucket: str, owned: frozenset[str]) -> tuple[list[str], list[str]]:
    """Open uploads as (leaked, owned by a checkpoint (ADR 0020)) keys."""
    leaked: list[str] = []
    kept: list[str] = []
    kwargs: dict[str, Any] = {"Bucket": bucket}
    while True:
        page = s3.list_multipart_uploads(**kwargs)
        for u in page.get("Uploads", []):
            (kept if u["UploadId"] in owned else leaked).append(u["Key"])
        if not page.get("IsTruncated"):
            return sorted(leaked), sorted(kept)
        kwargs["KeyMarker"] = page.get("NextKeyMarker", "")
        kwargs["UploadIdMarker"] = page.get("NextUploadIdMarker", "")


def _checkpoints(s3: Any, bucket: str, root: str) -> tuple[list[str], frozenset[str]]:
    """Checkpoints left under ``root`` and the upload ids they own (ADR 0020)."""
    keys = sorted(_keys(s3, bucket, ExportKeys.at(root).checkpoints))
    owned: set[str] = set()
    for key in keys:
        doc = _json_object(s3, bucket, key) or {}
        owned |= {str(m.get("upload_id")) for m in doc.get("members", [])}
    return keys, frozenset(owned)


@dataclass
class _Files:
    landed: list[str] = field(default_factory=list)
    rejected_ok: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    misclassified: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)


def _files(s3: Any, bucket: str, root: str, plan: ExportPlan) -> tuple[_Files, list[str]]:
    """Per-file outcomes in S3, and every object that belongs to no file's outcome."""
    report = verify_export(s3, bucket, root, plan.spec)
    verdicts = {v.file_id: v for v in report.verdicts}
    every_key = _keys(s3, bucket, "")
    export = ExportKeys.at(root)
    accounted = {export.manifest}
    out = _Files()
    for index in range(plan.count):
        spec = plan.spec.file(index)
        fid = spec.file_id
        verdict = verdicts[fid]
        keys = export.file(fid)
        manifest, rejection = keys.manifest, keys.rejected
        data = {k for k in every_key if k.startswith(keys.data_prefix)}
        has_manifest, has_rejection = manifest in every_key, rejection in every_key
        if spec.corrupt is None:
            # Whatever is wrong with a good file's objects is its verdict's problem;
            # what is left unaccounted below is stray.
            if has_manifest:
                accounted |= {manifest} | data
            if has_rejection:
                accounted |= {rejection}
            if verdict.ok:
                out.landed.append(fid)
            elif has_manifest:
                out.damaged.append(f"{fid}: {verdict.problem}")
            elif has_rejection:
                record = _json_object(s3, bucket, rejection) or {}
                out.misclassified.append(f"{fid}: good file rejected ({record.get('reason')})")
            else:
                out.lost.append(f"{fid}: no manifest, no rejection record")
            if has_rejection and has_manifest:
                out.damaged.append(f"{fid}: committed and also has a rejection record")
            continue
        accepted = accepted_reasons(spec)
        if has_manifest:
            accounted |= {manifest} | data
            out.misclassified.append(f"{fid}: corrupt file ({spec.corrupt}) was committed")
        elif has_rejection:
            accounted |= {rejection}
            reason = verdict.reason or ""
            out.reasons[reason] += 1
            if reason not in accepted:
                out.misclassified.append(
                    f"{fid}: {spec.corrupt}/{spec.kind} rejected as {reason!r}, "
                    f"expected one of {sorted(accepted)}"
                )
            elif data:
                out.damaged.append(f"{fid}: rejected but left {len(data)} object(s) under data/")
            else:
                out.rejected_ok.append(fid)
        else:
            out.lost.append(f"{fid}: corrupt file has neither a rejection record nor a manifest")
    stray = sorted(every_key - accounted)
    return out, stray


# ------------------------------------------------------------------ tracking


def _tracking(stack: Stack, plan: ExportPlan, root: str) -> list[str]:
    """How the tracking table and the export manifest disagree with the truth."""
    tracker = stack.tracker()
    export_id = plan.spec.export_id
    problems: list[str] = []
    state = tracker.get(export_id)
    good = [plan.spec.file(i) for i in range(plan.count) if plan.spec.file(i).corrupt is None]
    n_bad = plan.count - len(good)
    if state is None:
        return ["no tracking record for the export"]
    expected = {
        "status": "completed_with_errors" if n_bad else "completed",
        "files_expected": plan.count,
        "files_done": len(good),
        "files_rejected": n_bad,
        "files_outstanding": 0,
        "listing_complete": True,
        "pages_listed": plan.pages,
        "manifest_key": ExportKeys.at(root).manifest,
    }
    for name, want in expected.items():
        got = getattr(state, name)
        if got != want:
            problems.append(f"META {name} = {got!r}, expected {want!r}")
    outcomes = {fid: (o, d) for fid, o, d, _size in tracker.file_outcomes(export_id)}
    for index in range(plan.count):
        spec = plan.spec.file(index)
        got = outcomes.pop(spec.file_id, None)
        if got is None:
            problems.append(f"FILE#{spec.file_id}: no outcome recorded")
        elif spec.corrupt is None and got != (
            "done",
            ExportKeys.at(root).file(spec.file_id).manifest,
        ):
            problems.append(f"FILE#{spec.file_id}: {got[0]} ({got[1][:80]}), expected done")
        elif spec.corrupt is not None and (
            got[0] != "rejected" or got[1].split(":", 1)[0] not in accepted_reasons(spec)
        ):
            problems.append(
                f"FILE#{spec.file_id}: {got[0]} ({got[1][:80]}), expected rejected as one of "
                f"{sorted(accepted_reasons(spec))}"
            )
    problems += [f"FILE#{fid}: recorded but not listed" for fid in sorted(outcomes)]
    return problems


def _export_manifest(s3: Any, bucket: str, root: str, plan: ExportPlan) -> list[str]:
    manifest = _json_object(s3, bucket, ExportKeys.at(root).manifest)
    if manifest is None:
        return ["no export manifest (_manifest.json)"]
    good = {plan.spec.file(i).file_id for i in range(plan.count)} - set(plan.corrupt)
    files = [f.get("file_id") for f in manifest.get("files", [])]
    rejected = [r.get("file_id") for r in manifest.get("rejected", [])]
    problems = []
    if sorted(files) != sorted(good):
        problems.append(
            f"the export manifest lists {len(files)} files ({len(set(files))} distinct)"
        )
    if sorted(rejected) != sorted(plan.corrupt):
        problems.append(f"the export manifest rejects {sorted(rejected)}")
    return problems


def _events(stack: Stack, export_id: str) -> int:
    url = stack.get("EXPORTPIPE_EVENTS_QUEUE_URL")
    if url is None:
        return 0
    sqs = stack.client("sqs")
    count = 0
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        )
        if not batch:
            return count
        for message in batch:
            body = orjson.loads(message["Body"])
            count += isinstance(body, dict) and body.get("export_id") == export_id
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


# ---------------------------------------------------------------------- queues


def _queue_counts(stack: Stack) -> tuple[int, list[str]]:
    sqs = stack.client("sqs")
    total, lines = 0, []
    for name in ("requests", "jobs"):
        depth = queue_depth(sqs, stack.queue_urls(name)[0])
        total += depth.total
        label = "SQS 1" if name == "requests" else "SQS 2"
        lines.append(
            f"{label}: {depth.visible} visible, {depth.in_flight} in flight, "
            f"{depth.delayed} delayed"
        )
    return total, lines


@dataclass
class _Letters:
    total: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    hostile_ok: int = 0
    repeats: int = 0
    corrupt: Counter[str] = field(default_factory=Counter)
    unexplained: list[str] = field(default_factory=list)
    hostile_missing: list[str] = field(default_factory=list)
    corrupt_missing: list[str] = field(default_factory=list)


def _letters(stack: Stack, plan: ExportPlan, hostile: list[Injected]) -> _Letters:
    out = _Letters()
    expected = {m.body: m for m in hostile}
    seen: set[str] = set()
    for letter in list_dead_letters(stack):
        out.total += 1
        out.by_reason[f"{letter.queue}:{letter.reason}"] += 1
        message = expected.get(letter.body)
        if message is not None:
            if letter.body in seen:
                # Dead-lettered again: a process died between the DLQ send and the
                # delete, so the message came back (at least once, never lost).
                out.repeats += 1
                continue
            seen.add(letter.body)
            if letter.reason == message.reason:
                out.hostile_ok += 1
            else:
                out.unexplained.append(
                    f"{letter.queue} {message.variant}: reason {letter.reason!r}, "
                    f"expected {message.reason!r}"
                )
            continue
        try:
            raw = json.loads(letter.body)
        except ValueError:
            raw = None
        file_id = raw.get("file_id") if isinstance(raw, dict) else None
        spec = plan.spec.find(str(file_id)) if file_id else None
        if (
            letter.queue == "jobs"
            and isinstance(raw, dict)
            and raw.get("export_id") == plan.spec.export_id
            and spec is not None
            and spec.corrupt is not None
            and letter.reason in accepted_reasons(spec)
        ):
            out.corrupt[spec.file_id] += 1
            continue
        out.unexplained.append(
            f"{letter.queue} [{letter.summary}] {letter.reason} ({letter.error_type}): "
            f"{letter.error_message[:160]}"
        )
    out.hostile_missing = [
        f"{m.queue} {m.variant}: {m.body[:80]!r}" for m in hostile if m.body not in seen
    ]
    out.corrupt_missing = [fid for fid in plan.corrupt if out.corrupt[fid] == 0]
    return out


# ------------------------------------------------------------------------ logs


_RESUMED = re.compile(r'"(?:resumed_from|parts_reused)":\s*[1-9]')


def _scan_logs(log_dir: Path, secrets: tuple[str, ...]) -> tuple[list[str], int, int, int]:
    """Service log lines that carry a secret; unexpected handler failures; tracebacks;
    jobs committed after resuming a checkpoint (ADR 0020)."""
    leaks: list[str] = []
    unexpected = tracebacks = resumed = 0
    for path in sorted(log_dir.glob("*.log")):
        if not path.name.startswith(_SERVICE_LOG_PREFIXES):
            continue
        for line in path.read_text(errors="replace").splitlines():
            if any(secret in line for secret in secrets):
                leaks.append(f"{path.name}: {line[:160]}")
            unexpected += "handler failed unexpectedly" in line
            tracebacks += line.startswith("Traceback")
            resumed += '"job committed"' in line and _RESUMED.search(line) is not None
    return leaks, unexpected, tracebacks, resumed


def _api_errors(requests: list[dict[str, Any]], export_id: str) -> Counter[str]:
    served: Counter[str] = Counter()
    for r in requests:
        if r.get("export_id") == export_id and (r["status"] == 429 or r["status"] >= 500):
            served[f"{r['route']} {r['status']}"] += 1
    return served


# ------------------------------------------------------------------- reconcile


def reconcile(stack: Stack, plan: ExportPlan, observed: Observed, *, options: Options) -> Ledger:
    """Reconcile the run (see the module docstring) into a :class:`Ledger`."""
    s3 = stack.client("s3")
    bucket = stack.bucket
    export_id = plan.spec.export_id
    root = export_root(stack.output_prefix, export_id)
    files, stray = _files(s3, bucket, root, plan)
    checkpoints, owned = _checkpoints(s3, bucket, root)
    stray = [k for k in stray if k not in checkpoints]
    uploads, resumable = _open_uploads(s3, bucket, owned)
    tracking = _tracking(stack, plan, root) + _export_manifest(s3, bucket, root, plan)
    events = _events(stack, export_id)
    if events != 1:
        tracking.append(f"{events} ExportCompleted events, expected exactly 1")
    left, queue_lines = _queue_counts(stack)
    letters = _letters(stack, plan, observed.hostile)
    leaks, unexpected, tracebacks, resumed = _scan_logs(observed.log_dir, observed.secrets)
    fleet = observed.fleet
    n_bad = len(plan.corrupt)
    ledger = Ledger(seed=options.seed, export_id=export_id, state_dir=observed.state_dir)
    ledger.sections = [
        (
            "files",
            [
                Row("files_expected", "files expected (listed)", plan.count),
                Row("files_good", "  good / corrupt on purpose", f"{plan.count - n_bad} / {n_bad}"),
                Row("landed", "landed byte-exact", len(files.landed)),
                Row(
                    "rejected_correctly",
                    "rejected with a correct reason",
                    len(files.rejected_ok),
                    details=tuple(f"{r}: {n}" for r, n in sorted(files.reasons.items())),
                ),
                Row("lost", "lost", len(files.lost), True, tuple(files.lost)),
                Row(
                    "misclassified",
                    "misclassified (good rejected / bad landed / wrong reason)",
                    len(files.misclassified),
                    True,
                    tuple(files.misclassified),
                ),
                Row(
                    "duplicated_or_torn",
                    "duplicated or torn objects",
                    len(files.damaged) + len(stray),
                    True,
                    tuple(files.damaged) + tuple(f"stray object {k}" for k in stray),
                ),
                Row("open_uploads", "open multipart uploads", len(uploads), True, tuple(uploads)),
                Row(
                    "checkpoint_uploads",
                    "  open uploads a checkpoint owns",
                    len(resumable),
                    details=tuple(resumable),
                ),
                # Every file is settled at the end of a run, and settling deletes the
                # file's checkpoint: one left behind owns uploads nothing will end.
                Row(
                    "checkpoints_left",
                    "checkpoints left behind",
                    len(checkpoints),
                    True,
                    tuple(checkpoints),
                ),
                Row(
                    "tracking_mismatches",
                    "tracking table / completion mismatches",
                    len(tracking),
                    True,
                    tuple(tracking),
                ),
            ],
        ),
        (
            "queues",
            [
                Row(
                    "left_in_flight",
                    "messages left on SQS 1 + SQS 2",
                    left,
                    details=tuple(queue_lines),
                ),
                Row(
                    "dlq_entries",
                    "DLQ entries",
                    letters.total,
                    details=tuple(f"{r}: {n}" for r, n in sorted(letters.by_reason.items())),
                ),
                Row(
                    "dlq_hostile",
                    "  injected bad messages, with the expected reason",
                    f"{letters.hostile_ok} (of {len(observed.hostile)} injected)",
                ),
                Row(
                    "dlq_repeats",
                    "  the same bad message dead-lettered again",
                    letters.repeats,
                ),
                Row(
                    "dlq_corrupt",
                    "  corrupt files' jobs, with a correct reason",
                    sum(letters.corrupt.values()),
                    details=tuple(f"{f}: {n}" for f, n in sorted(letters.corrupt.items())),
                ),
                Row(
                    "dlq_unexplained",
                    "  unexplained (a finding)",
                    len(letters.unexplained),
                    True,
                    tuple(letters.unexplained),
                ),
                Row(
                    "dlq_missing",
                    "bad messages / corrupt files never dead-lettered",
                    len(letters.hostile_missing) + len(letters.corrupt_missing),
                    True,
                    tuple(letters.hostile_missing) + tuple(letters.corrupt_missing),
                ),
                Row(
                    "duplicates_sent", "duplicate job deliveries injected", observed.duplicates_sent
                ),
            ],
        ),
        (
            "faults (kind: injected of scheduled)",
            [
                Row(
                    f"fault_{kind}",
                    f"{kind} (of {observed.scheduled[kind]})",
                    observed.injected[kind],
                )
                for kind in sorted(observed.scheduled)
            ]
            + [
                Row(
                    "api_errors_served",
                    "Export API 429/5xx responses served",
                    sum(_api_errors(observed.simulator_requests, export_id).values()),
                    details=tuple(
                        f"{k}: {n}"
                        for k, n in sorted(
                            _api_errors(observed.simulator_requests, export_id).items()
                        )
                    ),
                ),
                Row(
                    "download_resumes",
                    "downloads resumed with Range after a cut",
                    sum(
                        1
                        for r in observed.simulator_requests
                        if r.get("export_id") == export_id
                        and r["route"] == "download"
                        and r.get("range")
                    ),
                ),
                Row(
                    "aws_requests_failed",
                    "AWS requests failed by the proxy",
                    sum(observed.aws_hits.values()),
                    details=tuple(f"{k}: {n}" for k, n in sorted(observed.aws_hits.items())),
                ),
            ],
        ),
        (
            "processes and logs",
            [
                Row("restarts", "replacement processes started", fleet.restarts),
                Row(
                    "clean_stops",
                    "SIGTERMed processes that exited 0",
                    len(fleet.clean_stops),
                    details=(f"longest took {_longest(fleet.clean_stops):.1f} s",),
                ),
                Row(
                    "startup_stops",
                    "SIGTERMed while starting (killed by the signal, held no work)",
                    len(fleet.startup_stops),
                    details=tuple(e.name for e in fleet.startup_stops),
                ),
                Row(
                    "crashes",
                    "processes that exited on their own",
                    len(fleet.crashes),
                    True,
                    tuple(f"{e.name} exit {e.code}: {e.log_tail[-300:]}" for e in fleet.crashes),
                ),
                Row(
                    "unclean_stops",
                    "SIGTERMed processes that exited non-zero or late",
                    len(fleet.unclean),
                    True,
                    tuple(f"{e.name} exit {e.code} after {e.seconds:.1f} s" for e in fleet.unclean),
                ),
                Row(
                    "secrets_in_logs",
                    "log lines with a token or signed URL",
                    len(leaks),
                    True,
                    tuple(leaks),
                ),
                Row(
                    "unexpected_handler_errors",
                    "'handler failed unexpectedly' log lines",
                    unexpected,
                ),
                Row("tracebacks", "tracebacks in service logs", tracebacks),
                Row(
                    "resumed_jobs",
                    "jobs committed from a checkpoint (by range or reused parts)",
                    resumed,
                ),
            ],
        ),
        (
            "time",
            [
                Row(
                    "export_seconds",
                    "export submitted -> completed (s)",
                    round(observed.export_seconds, 1)
                    if observed.export_seconds is not None
                    else "not completed",
                ),
                Row("wall_seconds", "wall time (s)", round(time.monotonic() - observed.started, 1)),
            ],
        ),
    ]
    if observed.export_seconds is None:
        ledger.sections[0][1].append(
            Row("not_completed", "export did not complete in time", 1, True)
        )
    return ledger


def _longest(exits: list[Exit]) -> float:
    return max((e.seconds for e in exits), default=0.0)
