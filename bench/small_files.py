"""Small files: the real services against a threaded script, and what each file costs.

    uv run --locked python -m bench.small_files [--files 300] [--file-size 4096]
        [--workers 2] [--jobs-per-worker 4] [--threads 8] [--keep]

On one local stack (``exportpipe local up``: one moto server process with its request
recorder on, ``MOTO_ENABLE_RECORDING=True``) and one Export API simulator serving two
exports of ``--files`` small gzip JSONL files each, it runs:

* **services**: one orchestrator and ``--workers`` worker processes (each admitting at
  most ``--jobs-per-worker`` jobs), started as ``exportpipe demo`` starts them; files/s
  from sending ``ExportRequested`` until the tracking table counts every file (polled
  every 0.1 s); the time to the export's completion (which reads every file's manifest
  to assemble the export's) is printed beside it;
* **script**: ``--threads`` threads doing ``GET`` (the file's URL from the simulator's
  listing) + ``gzip.decompress`` + ``put_object``, nothing else, against the same moto
  server -- what a user would script. Listing is not timed.

By default both run at the same total concurrency (2 workers x 4 jobs = 8 threads).
For each run it prints files/s and, from the recorder, the AWS requests per file by
service and operation, and the dollars per million files at us-east-1 list prices
(:data:`PRICES`). It also prints the CPU each process used per file (the moto server,
the services or the script, the simulator) and how busy the machine was: on one local
stack both sides share one moto process (one interpreter, DynamoDB requests served one
at a time), so its CPU per file bounds the files/s either side can reach there. The
bench's own requests (submitting, polling the tracking table) are marked with a
user-agent suffix and left out. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import psutil
from botocore.config import Config

from exportpipe.common.schemas import ExportRequested, encode
from exportpipe.common.tracking import ExportTracker
from exportpipe.tools.launch import (
    service_environment,
    start_orchestrator,
    start_simulator,
    start_worker,
)
from exportpipe.tools.local import StackOptions, down, up
from exportpipe.tools.processes import ProcessGroup
from exportpipe.tools.simulator import ExportSpec, SimulatorConfig

_BENCH_AGENT = "exportpipe-bench-small-files"
_TOKEN = "bench-token"  # noqa: S105 - the local simulator's token

PRICES = {
    "s3_put_class_per_1000": 0.005,  # PUT, COPY, POST, LIST
    "s3_get_class_per_1000": 0.0004,  # GET, HEAD (DELETE and abort are free)
    "sqs_per_million": 0.40,
    "dynamodb_wru_per_million": 0.625,  # on-demand; a transactional write is 2 WRU per KB
    "dynamodb_rru_per_million": 0.125,  # on-demand; a strongly consistent read is 1 per 4 KB
    "sns_per_million": 0.50,
}
"""us-east-1 list prices used for $ per million files (see docs/adr/0015)."""

S3_PUT_CLASS = {
    "PutObject",
    "CopyObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "ListMultipartUploads",
    "ListObjects",
    "ListParts",
}
S3_GET_CLASS = {"GetObject", "HeadObject"}


# -- the recorder's log ---------------------------------------------------------------


def _s3_operation(method: str, url: str, headers: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    has_key = parts.path.strip("/").count("/") >= 1
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        return "DeleteObjects" if "delete" in query else "PostObject"
    if method == "PUT":
        if "uploadId" in query:
            return "UploadPart"
        if any(k.lower() == "x-amz-copy-source" for k in headers):
            return "CopyObject"
        return "PutObject" if has_key else "CreateBucket"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    if "uploads" in query:
        return "ListMultipartUploads"
    if "uploadId" in query:
        return "ListParts"
    return "GetObject" if has_key else "ListObjects"


def _classify(entry: dict[str, Any]) -> tuple[str, str, int]:
    """``(service, operation, write units)`` of one recorded request."""
    headers = {str(k): str(v) for k, v in entry.get("headers", {}).items()}
    lower = {k.lower(): v for k, v in headers.items()}
    target = lower.get("x-amz-target", "")
    if target.startswith("AmazonSQS."):
        return "sqs", target.split(".", 1)[1], 0
    if target.startswith("DynamoDB_"):
        operation = target.split(".", 1)[1]
        units = {"PutItem": 1, "UpdateItem": 1, "DeleteItem": 1}.get(operation, 0)
        body = entry.get("body") or ""
        if entry.get("body_encoded"):
            body = base64.b64decode(body).decode()
        if operation == "TransactWriteItems":
            # Every item here is under 1 KB: 2 units each, condition checks included.
            units = 2 * len(json.loads(body).get("TransactItems", []))
        elif operation == "BatchWriteItem":
            requests = json.loads(body).get("RequestItems", {}).values()
            units = sum(len(r) for r in requests)  # 1 unit per item under 1 KB
        return "dynamodb", operation, units
    scope = lower.get("authorization", "").split("Credential=", 1)[-1].split("/")
    service = scope[3] if len(scope) > 3 else "unknown"
    if service == "s3":
        return "s3", _s3_operation(entry["method"], entry["url"], headers), 0
    body = entry.get("body") or ""
    if entry.get("body_encoded"):
        body = base64.b64decode(body).decode(errors="replace")
    action = parse_qs(body).get("Action", ["?"])[0]
    return service, action, 0


def _entries(path: Path) -> list[dict[str, Any]]:
    """The recorded requests. moto's server threads append without a lock, so an entry's
    newline can land after another entry: decode objects one after another instead of
    line by line, and skip to the next entry's start over a torn one (counted)."""
    text = path.read_text() if path.exists() else ""
    decoder = json.JSONDecoder()
    entries: list[dict[str, Any]] = []
    torn = 0
    i = 0
    while True:
        start = text.find('{"headers"', i)
        if start < 0:
            break
        try:
            entry, i = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            torn += 1
            i = start + 1
            continue
        entries.append(entry)
    if torn:
        print(f"   (recorder: {torn} torn entries skipped)")
    return entries


@dataclass
class Requests:
    """Requests recorded during one run (the bench's own left out)."""

    count: Counter[tuple[str, str]]
    write_units: int

    @classmethod
    def read(cls, path: Path) -> Requests:
        """Parse the recorder's file."""
        count: Counter[tuple[str, str]] = Counter()
        units = 0
        for entry in _entries(path):
            agent = str(entry.get("headers", {}).get("User-Agent", ""))
            if _BENCH_AGENT in agent:
                continue
            service, operation, wru = _classify(entry)
            count[(service, operation)] += 1
            units += wru
        return cls(count, units)

    def s3_put_class(self) -> int:
        """S3 PUT/COPY/POST/LIST-class requests."""
        return sum(n for (s, op), n in self.count.items() if s == "s3" and op in S3_PUT_CLASS)

    def dollars_per_million(self, files: int) -> dict[str, float]:
        """$ per million files, by service, at :data:`PRICES`."""
        per = 1e6 / files
        s3_get = sum(n for (s, op), n in self.count.items() if s == "s3" and op in S3_GET_CLASS)
        sqs = sum(n for (s, _), n in self.count.items() if s == "sqs")
        sns = sum(n for (s, _), n in self.count.items() if s == "sns")
        reads = sum(
            n for (s, op), n in self.count.items() if s == "dynamodb" and op in {"GetItem", "Query"}
        )
        return {
            "s3": per
            * (
                self.s3_put_class() * PRICES["s3_put_class_per_1000"] / 1000
                + s3_get * PRICES["s3_get_class_per_1000"] / 1000
            ),
            "sqs": per * sqs * PRICES["sqs_per_million"] / 1e6,
            "dynamodb": per
            * (
                self.write_units * PRICES["dynamodb_wru_per_million"] / 1e6
                + reads * PRICES["dynamodb_rru_per_million"] / 1e6
            ),
            "sns": per * sns * PRICES["sns_per_million"] / 1e6,
        }

    def report(self, title: str, files: int, seconds: float) -> None:
        """Print files/s, requests per file by operation and $ per million files."""
        print(f"\n== {title}: {files} files in {seconds:.2f} s = {files / seconds:.1f} files/s")
        for (service, operation), n in sorted(self.count.items()):
            print(f"   {service:9s} {operation:28s} {n:6d}  {n / files:6.2f} per file")
        print(f"   S3 PUT/POST/LIST-class per file: {self.s3_put_class() / files:.2f}")
        print(f"   DynamoDB write units per file: {self.write_units / files:.2f}")
        dollars = self.dollars_per_million(files)
        parts = ", ".join(f"{k} {v:.2f}" for k, v in dollars.items())
        print(f"   $ per million files: {sum(dollars.values()):.2f} ({parts})")


def _recorder(endpoint: str, action: str) -> None:
    request = urllib.request.Request(
        f"{endpoint}/moto-api/recorder/{action}", method="POST", data=b""
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


class CpuMeter:
    """CPU seconds used by named processes between :meth:`start` and :meth:`stop`."""

    def __init__(self, processes: dict[str, int]) -> None:
        self._procs = {name: psutil.Process(pid) for name, pid in processes.items()}
        self._start: dict[str, float] = {}
        self._used: dict[str, float] = {}
        self._machine: tuple[float, float] = (0.0, 0.0)
        self._wall = 0.0

    @staticmethod
    def _cpu(proc: psutil.Process) -> float:
        try:
            times = proc.cpu_times()
        except psutil.Error:  # exited: nothing more to count
            return 0.0
        return float(times.user + times.system)

    @staticmethod
    def _busy() -> tuple[float, float]:
        times = psutil.cpu_times()
        idle = times.idle + getattr(times, "iowait", 0.0)
        return sum(times) - idle, sum(times)

    def start(self) -> None:
        """Begin counting."""
        self._start = {name: self._cpu(p) for name, p in self._procs.items()}
        self._machine = self._busy()
        self._wall = time.monotonic()

    def stop(self) -> None:
        """Stop counting (before the processes exit)."""
        self._used = {name: self._cpu(p) - self._start[name] for name, p in self._procs.items()}
        busy, total = self._busy()
        self._machine = (busy - self._machine[0], total - self._machine[1])
        self._wall = time.monotonic() - self._wall

    def report(self, files: int) -> None:
        """Print CPU ms per file by process, and how busy the machine was."""
        parts = ", ".join(f"{name} {1000 * used / files:.1f}" for name, used in self._used.items())
        print(f"   CPU ms per file: {parts}")
        busy, total = self._machine
        share = {name: used / self._wall for name, used in self._used.items()}
        print(
            f"   machine {100 * busy / max(total, 1e-9):.0f}% busy over {self._wall:.1f} s "
            f"({psutil.cpu_count()} CPUs); moto server {100 * share.get('moto', 0.0):.0f}% "
            "of one CPU"
        )


# -- the runs -------------------------------------------------------------------------


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        config=Config(user_agent_extra=_BENCH_AGENT, retries={"mode": "standard"}),
    )


def _wait_finished(
    tracker: ExportTracker, export_id: str, timeout: float, on_all_files: Any = None
) -> tuple[float, float]:
    """Wall times at which every file was counted (seen by polling) and the export done."""
    deadline = time.monotonic() + timeout
    all_files: float | None = None
    while time.monotonic() < deadline:
        state = tracker.get(export_id)
        if (
            all_files is None
            and state is not None
            and state.listing_complete
            and state.files_outstanding == 0
        ):
            all_files = time.time()
            if on_all_files is not None:
                on_all_files()
        if state is not None and state.finished:
            if state.files_done != state.files_expected:
                print(f"   !! {state.files_done} of {state.files_expected} files done")
            return all_files or state.last_activity, state.last_activity
        time.sleep(0.1)
    raise SystemExit(f"export {export_id} did not finish in {timeout:.0f} s")


def _wait_polling(log_dir: Path, names: list[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = [(log_dir / f"{n}.log") for n in names]
        if all(p.exists() and "consumer started" in p.read_text() for p in logs):
            return
        time.sleep(0.2)
    raise SystemExit("the services did not start polling in time")


def run_services(
    *,
    values: dict[str, str],
    env_file: Path,
    endpoint: str,
    sim_url: str,
    args: Any,
    tmp: Path,
    shared: dict[str, int],
) -> tuple[float, Requests, CpuMeter]:
    """One orchestrator + workers copying export ``small-svc``; seconds and requests."""
    log_dir = tmp / "logs"
    env = service_environment(
        values,
        env_file,
        api_url=sim_url,
        api_token=_TOKEN,
        spool_dir=tmp / "spool",
        overrides={
            "EXPORTPIPE_CONCURRENCY": str(args.jobs_per_worker),
            "EXPORTPIPE_PAGE_SIZE": "100",
        },
    )
    names = ["orchestrator"] + [f"worker-{n}" for n in range(1, args.workers + 1)]
    with ProcessGroup(grace=30) as group:
        services = {"orchestrator": start_orchestrator(group, env, log_dir=log_dir).pid}
        for name in names[1:]:
            services[name] = start_worker(group, env, log_dir=log_dir, name=name).pid
        _wait_polling(log_dir, names)
        cpu = CpuMeter({**shared, **services})
        _recorder(endpoint, "reset-recording")
        _recorder(endpoint, "start-recording")
        sqs = _client("sqs", endpoint)
        tracker = ExportTracker(_client("dynamodb", endpoint), values["EXPORTPIPE_TABLE"])
        cpu.start()
        started = time.time()
        sqs.send_message(
            QueueUrl=values["EXPORTPIPE_REQUESTS_QUEUE_URL"],
            MessageBody=encode(ExportRequested(export_id="small-svc")),
        )
        all_files, finished = _wait_finished(tracker, "small-svc", args.timeout, cpu.stop)
        # Requests after completion (deletes flushed, the last polls) belong to the run.
        time.sleep(1.0)
        _recorder(endpoint, "stop-recording")
        group.stop_all()
    print(
        f"\n(services: every file counted after {all_files - started:.2f} s; the export "
        f"completed, its manifest assembled from every file's, after {finished - started:.2f} s)"
    )
    return all_files - started, Requests.read(tmp / "requests.jsonl"), cpu


def _listing(sim_url: str, export_id: str) -> list[dict[str, Any]]:
    files: list[dict[str, Any]] = []
    cursor = ""
    while True:
        url = f"{sim_url}/v1/exports/{export_id}/files?limit=100&cursor={cursor}"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {_TOKEN}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            page = json.loads(response.read())
        files.extend(page["files"])
        if not page.get("next_cursor"):
            return files
        cursor = page["next_cursor"]


def run_script(
    *, bucket: str, endpoint: str, sim_url: str, threads: int, tmp: Path, shared: dict[str, int]
) -> tuple[int, float, Requests, CpuMeter]:
    """GET + gunzip + put_object on ``threads`` threads; files, seconds and requests."""
    files = _listing(sim_url, "small-script")
    s3 = boto3.client("s3", endpoint_url=endpoint, config=Config(max_pool_connections=threads + 2))
    local = threading.local()

    def copy(entry: dict[str, Any]) -> None:
        with urllib.request.urlopen(entry["url"], timeout=30) as response:
            data = gzip.decompress(response.read())
        s3.put_object(Bucket=bucket, Key=f"script/{entry['file_id']}.jsonl", Body=data)
        local.done = getattr(local, "done", 0) + 1

    _recorder(endpoint, "reset-recording")
    _recorder(endpoint, "start-recording")
    cpu = CpuMeter({**shared, "script": os.getpid()})
    cpu.start()
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(copy, files))
    seconds = time.monotonic() - started
    cpu.stop()
    _recorder(endpoint, "stop-recording")
    return len(files), seconds, Requests.read(tmp / "requests.jsonl"), cpu


def main(argv: list[str] | None = None) -> int:
    """Run both and print the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.small_files")
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--file-size", type=int, default=4096, help="uncompressed bytes")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--jobs-per-worker", type=int, default=4)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="exportpipe-small-files-"))
    os.environ["MOTO_ENABLE_RECORDING"] = "True"
    os.environ["MOTO_RECORDER_FILEPATH"] = str(tmp / "requests.jsonl")
    stack_dir = tmp / "stack"
    try:
        stack_up = up(stack_dir, StackOptions(visibility_timeout=30))
        # Setting up the stack is not part of any run.
        endpoint = stack_up.state.endpoint
        _recorder(endpoint, "stop-recording")
        # The bench's own clients (and the script's) use the stack's region and keys.
        os.environ.update({k: v for k, v in stack_up.values.items() if k.startswith("AWS_")})
        exports = tuple(
            ExportSpec(
                export_id=export_id,
                generated=args.files,
                kinds=("jsonl.gz",),
                file_size=args.file_size,
                page_size=100,
            )
            for export_id in ("small-svc", "small-script")
        )
        with ProcessGroup(grace=10) as group:
            sim = start_simulator(
                group, SimulatorConfig(token=_TOKEN, exports=exports), state_dir=tmp
            )
            print(
                f"{os.cpu_count()} CPUs (shared machine: figures vary with its load); "
                f"{args.files} gzip JSONL files of {args.file_size} bytes uncompressed; "
                f"moto {endpoint}"
            )
            shared = {"moto": stack_up.state.pid, "simulator": sim.process.pid}
            seconds, requests, services_cpu = run_services(
                values=dict(stack_up.values),
                env_file=stack_up.env_file,
                endpoint=endpoint,
                sim_url=sim.url,
                args=args,
                tmp=tmp,
                shared=shared,
            )
            requests.report(
                f"services: 1 orchestrator + {args.workers} workers x {args.jobs_per_worker} "
                "jobs, submit to every file counted",
                args.files,
                seconds,
            )
            services_cpu.report(args.files)
            n, script_seconds, script_requests, script_cpu = run_script(
                bucket=stack_up.values["EXPORTPIPE_BUCKET"],
                endpoint=endpoint,
                sim_url=sim.url,
                threads=args.threads,
                tmp=tmp,
                shared=shared,
            )
            script_requests.report(f"script: {args.threads} threads", n, script_seconds)
            script_cpu.report(n)
            ratio = (args.files / seconds) / (n / script_seconds)
            print(f"\nservices / script files/s: {ratio:.2f}x")
    finally:
        down(stack_dir)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
