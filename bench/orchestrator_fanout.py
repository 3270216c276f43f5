"""Orchestrator fan-out benchmark: jobs/s, SQS send requests per job, peak RSS.

Run: ``uv run python -m bench.orchestrator_fanout`` (``--help`` for knobs).

Set-up, all on this machine:

* a moto server process (SQS 1, SQS 2 and their DLQs), by default run through
  ``bench.moto_sqs_fast``: unpatched moto 5.2 loses messages sent while another client
  deletes from the same queue, and its per-message cost grows with queue depth, so the
  benchmark would otherwise measure moto (``--plain-moto`` runs it unpatched);
* ``exportpipe.testing.proxy`` in front of it, adding a fixed delay (default 15 ms) to
  every request, standing in for a real SQS round trip (see FIELD-NOTES: on the bare
  emulator per-message processing dominates and hides what batching buys);
* the Export API simulator process serving exports of 2,000 and 20,000 small files;
* the real orchestrator process (``python -m exportpipe.orchestrator``) whose SQS traffic
  goes through the proxy;
* drainer threads in this process receiving and deleting from SQS 2 directly (not
  through the proxy), keeping the queue shallow and checking every job id arrived.

Then the same export through a naive loop (list pages, one ``send_message`` per file,
same proxy) for comparison. Jobs/s counts from submitting the request until the drainer
has seen every distinct job id; peak RSS is the process's ``VmHWM``. Figures are
printed, not asserted; ``BENCH_VERBOSE=1`` also prints the orchestrator's page log.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import orjson

from exportpipe.testing import MotoServer, create_queue_pair

TOKEN = "bench-token"  # noqa: S105 - local simulator token
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class RunResult:
    label: str
    files: int
    seconds: float
    sends: int
    requests: dict[str, int]
    peak_rss_mb: float
    duplicates: int

    @property
    def jobs_per_second(self) -> float:
        return self.files / self.seconds

    @property
    def sends_per_job(self) -> float:
        return self.sends / self.files


class Child:
    """A subprocess whose output is read continuously (so it never blocks on a pipe)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, needle: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if needle in line:
                        return line
                seen = len(self.lines)
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise RuntimeError(f"{self.proc.args!r} exited:\n{''.join(self.lines[-30:])}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {needle!r} from {self.proc.args!r}")
                self._cond.wait(timeout=min(left, 0.5))

    def peak_rss_mb(self) -> float:
        """VmHWM (peak resident set) of the process, from /proc."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        return self.proc.returncode


class Drainer:
    """Threads receiving and deleting SQS 2 messages, recording every job id seen."""

    def __init__(self, sqs: Any, queue_url: str, threads: int) -> None:
        self._sqs = sqs
        self._url = queue_url
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.ids: set[str] = set()
        self.received = 0
        self.errors = 0
        self.last_error = ""
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Drainer:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._drain_once()
            except Exception as exc:  # keep draining: a dead drainer would stall the run
                with self._lock:
                    self.errors += 1
                    self.last_error = repr(exc)[:300]
                time.sleep(0.2)

    def _drain_once(self) -> None:
        messages = self._sqs.receive_message(
            QueueUrl=self._url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        if not messages:
            return
        found = [orjson.loads(m["Body"])["job_id"] for m in messages]
        self._sqs.delete_message_batch(
            QueueUrl=self._url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )
        with self._lock:
            self.ids.update(found)
            self.received += len(found)

    def wait_for(self, count: int, timeout: float, stall: float = 60.0) -> float:
        """Block until ``count`` distinct ids were seen; returns the monotonic time then.

        Raises:
            TimeoutError: past ``timeout``, or no new id for ``stall`` seconds.
        """
        deadline = time.monotonic() + timeout
        seen, last_progress = 0, time.monotonic()
        while True:
            with self._lock:
                now_seen = len(self.ids)
            if now_seen >= count:
                return time.monotonic()
            now = time.monotonic()
            if now_seen != seen:
                seen, last_progress = now_seen, now
            if now > deadline or now - last_progress > stall:
                raise TimeoutError(
                    f"only {now_seen} of {count} jobs arrived (drainer errors: {self.errors} "
                    f"{self.last_error})"
                )
            time.sleep(0.02)


def _proxy_call(proxy_url: str, path: str) -> dict[str, int]:
    import urllib.request

    method = "POST" if path.endswith("reset") else "GET"
    req = urllib.request.Request(
        f"{proxy_url}{path}", method=method, data=b"" if method == "POST" else None
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return dict(json.loads(r.read()))


def _service_env(base: dict[str, str], proxy_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXPORTPIPE_", "AWS_"))}
    env.update(AWS_ENV)
    env.update(base)
    env["AWS_ENDPOINT_URL"] = proxy_url
    return env


def run_one(
    *,
    label: str,
    files: int,
    command: list[str],
    env: dict[str, str],
    ready_line: str,
    submit: Any,
    sqs_direct: Any,
    jobs_url: str,
    proxy_url: str,
    drainers: int,
    timeout: float,
) -> RunResult:
    _proxy_call(proxy_url, "/__proxy/reset")
    with Drainer(sqs_direct, jobs_url, drainers) as drainer:
        child = Child(command, env)
        try:
            child.wait_for(ready_line)
            started = time.monotonic()
            submit()
            try:
                finished = drainer.wait_for(files, timeout)
            except TimeoutError:
                print("".join(child.lines[-40:]), file=sys.stderr)
                raise
            peak = child.peak_rss_mb()
        finally:
            code = child.stop()
            if os.environ.get("BENCH_VERBOSE"):
                print(
                    "".join(line for line in child.lines if "page done" in line or "rror" in line)
                )
        time.sleep(1.0)  # let the drainer pick up any duplicates still in flight
    if code not in (0, None):
        print(f"warning: {label} exited with {code}", file=sys.stderr)
    counts = _proxy_call(proxy_url, "/__proxy/stats")
    sends = counts.get("SendMessage", 0) + counts.get("SendMessageBatch", 0)
    return RunResult(
        label=label,
        files=files,
        seconds=finished - started,
        sends=sends,
        requests=counts,
        peak_rss_mb=peak,
        duplicates=drainer.received - len(drainer.ids),
    )


# ------------------------------------------------------------------ naive loop


def naive_worker(argv: list[str]) -> int:
    """One ``send_message`` per file, pages fetched in order: the baseline."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--api", required=True)
    parser.add_argument("--export-id", required=True)
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--page-size", type=int, default=1000)
    args = parser.parse_args(argv)

    from exportpipe.common.retry import aws_client
    from exportpipe.common.schemas import DownloadJob, S3Destination, encode, job_id_for
    from exportpipe.orchestrator.http_source import HttpExportSource

    sqs = aws_client("sqs")
    source = HttpExportSource(args.api, os.environ["BENCH_API_TOKEN"])
    destination = S3Destination(bucket="bench-bucket", prefix=f"exports/{args.export_id}/")
    print("naive started", flush=True)
    cursor = None
    while True:
        page = source.list_files(args.export_id, cursor=cursor, limit=args.page_size)
        for f in page.files:
            job = DownloadJob(
                job_id=job_id_for(args.export_id, f.file_id),
                export_id=args.export_id,
                file_id=f.file_id,
                file_name=f.name,
                url=f.url,
                size_bytes=f.size_bytes,
                sha256=f.sha256,
                compression=f.compression,  # type: ignore[arg-type]
                format=f.format,  # type: ignore[arg-type]
                destination=destination,
            )
            sqs.send_message(QueueUrl=args.queue_url, MessageBody=encode(job))
        cursor = page.next_cursor
        if cursor is None:
            break
    print("naive done", flush=True)
    # Stay alive until stopped, like the service, so the parent reads a stable peak RSS.
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    return 0


# ------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--naive-worker":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        return naive_worker(argv[1:])

    parser = argparse.ArgumentParser(prog="python -m bench.orchestrator_fanout")
    parser.add_argument("--files", type=int, default=20_000, help="large export")
    parser.add_argument("--small-files", type=int, default=2_000, help="small export")
    parser.add_argument("--naive-files", type=int, default=2_000, help="naive loop's export")
    parser.add_argument("--delay-ms", type=float, default=15.0, help="proxy delay per request")
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--drainers", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--moto-endpoint", help="use this moto server instead of starting one")
    parser.add_argument(
        "--plain-moto",
        action="store_true",
        help="run moto unpatched (its per-message cost then grows with queue depth)",
    )
    args = parser.parse_args(argv)

    from exportpipe.common.schemas import ExportRequested, encode
    from exportpipe.tools.simulator import ExportSpec, SimulatorConfig

    exports = {
        "fan-small": args.small_files,
        "fan-large": args.files,
        "fan-naive": args.naive_files,
    }
    workdir = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    config = SimulatorConfig(
        token=TOKEN,
        exports=tuple(
            ExportSpec.mixed(
                export_id, n, kinds=("jsonl",), file_size=200, page_size=args.page_size
            )
            for export_id, n in exports.items()
        ),
    )
    (workdir / "exports.json").write_text(config.model_dump_json())

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    base_env.update(AWS_ENV)
    moto: Any = (
        _External(args.moto_endpoint)
        if args.moto_endpoint
        else _Moto(workdir / "moto.log", patched=not args.plain_moto)
    )
    with moto:
        proxy = Child(
            [
                sys.executable,
                "-m",
                "exportpipe.testing.proxy",
                "--upstream",
                moto.endpoint,
                "--delay-ms",
                str(args.delay_ms),
            ],
            base_env,
        )
        sim = Child(
            [
                sys.executable,
                "-m",
                "exportpipe.tools.simulator",
                "--exports",
                str(workdir / "exports.json"),
            ],
            base_env,
        )
        try:
            proxy_url = json.loads(proxy.wait_for('"url"'))["url"]
            api_url = json.loads(sim.wait_for('"url"'))["url"]
            sqs = boto3.client("sqs", endpoint_url=moto.endpoint, **_boto_kwargs())
            requests_url, requests_dlq = create_queue_pair(sqs, "bench-requests")
            jobs_url, _jobs_dlq = create_queue_pair(sqs, "bench-jobs")

            service = {
                "EXPORTPIPE_BUCKET": "bench-bucket",
                "EXPORTPIPE_REQUESTS_QUEUE_URL": requests_url,
                "EXPORTPIPE_REQUESTS_DLQ_URL": requests_dlq,
                "EXPORTPIPE_JOBS_QUEUE_URL": jobs_url,
                "EXPORTPIPE_EXPORT_API_URL": api_url,
                "EXPORTPIPE_EXPORT_API_TOKEN": TOKEN,
                "EXPORTPIPE_PAGE_SIZE": str(args.page_size),
                "EXPORTPIPE_WAIT_TIME_SECONDS": "2",
                "EXPORTPIPE_SHUTDOWN_GRACE_SECONDS": "10",
                "EXPORTPIPE_LOG_LEVEL": "INFO",
                "BENCH_API_TOKEN": TOKEN,
            }
            env = _service_env(service, proxy_url)
            results = []
            for label, export_id in (
                ("orchestrator", "fan-small"),
                ("orchestrator", "fan-large"),
            ):

                def submit(export_id: str = export_id) -> None:
                    sqs.send_message(
                        QueueUrl=requests_url,
                        MessageBody=encode(ExportRequested(export_id=export_id)),
                    )

                print(f"running {label} on {exports[export_id]} files...", flush=True)
                results.append(
                    run_one(
                        label=label,
                        files=exports[export_id],
                        command=[sys.executable, "-m", "exportpipe.orchestrator"],
                        env=env,
                        ready_line="consumer started",
                        submit=submit,
                        sqs_direct=sqs,
                        jobs_url=jobs_url,
                        proxy_url=proxy_url,
                        drainers=args.drainers,
                        timeout=args.timeout,
                    )
                )
            print(f"running naive loop on {args.naive_files} files...", flush=True)
            results.append(
                run_one(
                    label="naive send_message",
                    files=args.naive_files,
                    command=[
                        sys.executable,
                        "-m",
                        "bench.orchestrator_fanout",
                        "--naive-worker",
                        "--api",
                        api_url,
                        "--export-id",
                        "fan-naive",
                        "--queue-url",
                        jobs_url,
                        "--page-size",
                        str(args.page_size),
                    ],
                    env=env,
                    ready_line="naive started",
                    submit=lambda: None,
                    sqs_direct=sqs,
                    jobs_url=jobs_url,
                    proxy_url=proxy_url,
                    drainers=args.drainers,
                    timeout=args.timeout,
                )
            )
        finally:
            sim.stop()
            proxy.stop()

    report(results, args)
    return 0


class _Moto(MotoServer):
    """moto server in its own process; by default with ``bench.moto_sqs_fast``'s patches."""

    def __init__(self, log_file: Path, *, patched: bool) -> None:
        super().__init__(log_file=log_file)
        self._patched = patched

    def start(self, timeout: float = 30.0) -> _Moto:
        if not self._patched:
            super().start(timeout)
            return self
        with open(self._log_file or os.devnull, "ab") as out:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.moto_sqs_fast",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"},
            )
        deadline = time.monotonic() + timeout
        import urllib.request

        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/data.json", timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("patched moto server did not start")

    def __enter__(self) -> _Moto:
        return self.start()


class _External:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def __enter__(self) -> _External:
        return self

    def __exit__(self, *_: object) -> None:
        pass


def _boto_kwargs() -> dict[str, Any]:
    from botocore.config import Config

    return {
        "region_name": "us-east-1",
        "aws_access_key_id": "bench",
        "aws_secret_access_key": "bench",
        "config": Config(max_pool_connections=16, retries={"mode": "standard"}),
    }


def report(results: list[RunResult], args: argparse.Namespace) -> None:
    print()
    moto = "moto (unpatched)" if args.plain_moto else "moto (bench.moto_sqs_fast)"
    print(
        f"Orchestrator fan-out: SQS through a {args.delay_ms:g} ms delay proxy in front of "
        f"{moto}; page size {args.page_size}; {args.drainers} drainer threads on SQS 2"
    )
    header = (
        f"{'run':<20}{'files':>8}{'seconds':>10}{'jobs/s':>10}"
        f"{'sends/job':>11}{'peak RSS MB':>13}{'dupes':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.label:<20}{r.files:>8}{r.seconds:>10.2f}{r.jobs_per_second:>10.1f}"
            f"{r.sends_per_job:>11.3f}{r.peak_rss_mb:>13.1f}{r.duplicates:>7}"
        )
    small, large, naive = results
    speedup = large.jobs_per_second / naive.jobs_per_second
    flat = large.peak_rss_mb - small.peak_rss_mb
    print()
    print(
        f"speed-up vs naive: {speedup:.1f}x (target >= 8x: {'met' if speedup >= 8 else 'MISSED'})"
    )
    print(
        f"send requests per job: {large.sends_per_job:.3f} (target <= 0.11: "
        f"{'met' if large.sends_per_job <= 0.11 else 'MISSED'})"
    )
    print(
        f"peak RSS: {small.peak_rss_mb:.1f} MB at {small.files} files, "
        f"{large.peak_rss_mb:.1f} MB at {large.files} files ({flat:+.1f} MB; target < 150 MB "
        f"and flat: {'met' if large.peak_rss_mb < 150 and flat < 10 else 'MISSED'})"
    )
    print("SQS requests through the proxy (large run):", dict(sorted(large.requests.items())))


if __name__ == "__main__":
    sys.exit(main())
