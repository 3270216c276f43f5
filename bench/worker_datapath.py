"""Worker data-path benchmark: the real worker against moto, and two baselines.

    uv run python -m bench.worker_datapath [--size-mb 1024] [--keep]

Generates a gzip JSONL file of ``--size-mb`` MB uncompressed and one ten times smaller
in a temporary directory (never in the repo), serves them over local HTTP (a
``python -m http.server`` process) and, for each size, runs:

* **worker** — ``python -m exportpipe.worker`` consuming a ``DownloadJob`` from SQS on a
  moto server process and landing it in moto S3 (download → isal gunzip → msgspec
  validation → parallel multipart upload → manifest). CPU and peak RSS are the worker
  process's own (``/proc``), measured from an idle baseline to the manifest appearing.
* **(a) plain Python** — ``urllib`` + stdlib ``gzip`` + ``json.loads`` per line +
  ``smart_open`` S3 writer, in a child process.
* **(b) shell** — ``curl | gzip -dc | aws s3 cp -`` (no validation); when the aws CLI is
  missing, ``aws s3 cp -`` is replaced by a boto3 ``upload_fileobj`` from stdin (said so
  in the output).

Figures printed per run: MB/s of uncompressed output (wall), CPU-seconds per GB of
output, and peak RSS (the worker's ``VmHWM``; for the baselines the summed RSS of the
run's process tree, sampled every 50 ms). The moto server's own CPU is not
counted for anyone; it competes for the same two cores in every run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from exportpipe.common.layout import ExportKeys
from exportpipe.common.schemas import DownloadJob, S3Destination, encode, job_id_for
from exportpipe.testing import MotoServer, create_queue_pair, free_port

MB = 1_000_000
_CLK = os.sysconf("SC_CLK_TCK")
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


# -- data -----------------------------------------------------------------------------


def _block(rng: random.Random, size: int, start_id: int) -> tuple[bytes, int]:
    words = ["alpha", "beta", "gamma", "delta", "omega", "kappa", "sigma", "theta"]
    lines = []
    total = 0
    i = start_id
    while total < size:
        record = {
            "id": i,
            "ts": 1_700_000_000 + rng.randrange(10**7),
            "user": f"u{rng.randrange(10**6):06d}",
            "event": rng.choice(words),
            "amount": round(rng.random() * 1000, 2),
            "tags": rng.sample(words, 3),
            "note": " ".join(rng.choice(words) for _ in range(rng.randrange(2, 12))),
        }
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        lines.append(line)
        total += len(line)
        i += 1
    return b"".join(lines), i


_BLOCKS: list[bytes] = []


def _blocks(seed: int) -> list[bytes]:
    if not _BLOCKS:
        rng = random.Random(seed)
        next_id = 0
        for _ in range(64):
            block, next_id = _block(rng, MB, next_id)
            _BLOCKS.append(block)
    return _BLOCKS


def generate(path: Path, size_bytes: int, *, seed: int = 7) -> tuple[int, int]:
    """Write a gzip JSONL file of about ``size_bytes`` uncompressed; return (raw, gz) sizes.

    64 distinct 1 MB blocks of varied records are written in random order (records in a
    block share ids across repeats; the validator does not care), compressed with
    python-isal at level 3 (a standard gzip stream, compressing like ``gzip -3``).
    """
    from isal import igzip

    blocks = _blocks(seed)
    rng = random.Random(seed + size_bytes)
    written = 0
    with igzip.open(path, "wb", compresslevel=3) as out:
        while written < size_bytes:
            block = blocks[rng.randrange(len(blocks))]
            out.write(block)
            written += len(block)
    return written, path.stat().st_size


# -- process measurement ----------------------------------------------------------------


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK  # utime + stime


def _proc_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Figures:
    name: str
    out_bytes: int
    wall: float
    cpu: float
    rss_mb: float
    note: str = ""

    def row(self) -> str:
        gb = self.out_bytes / 1e9
        return (
            f"{self.name:<34} {self.out_bytes / MB:>9.0f} {self.wall:>8.1f} "
            f"{self.out_bytes / MB / self.wall:>8.1f} {self.cpu / gb:>9.2f} {self.rss_mb:>9.0f}"
            + (f"  {self.note}" if self.note else "")
        )


def _tree_rss_mb(root: int) -> float:
    """Summed RSS of ``root`` and its descendants, from ``/proc``."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        rss[pid] = int(fields[21])  # resident pages
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total * _PAGE_KB / 1024


class _RssSampler:
    """Samples the summed RSS of a process tree every 50 ms; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.peak = 0.0
        self._pid = pid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, _tree_rss_mb(self._pid))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def _run_child(cmd: list[str], env: dict[str, str], **kw: Any) -> tuple[float, float, float]:
    """Run ``cmd``; return wall seconds, CPU seconds (with its reaped children) and the
    peak summed RSS in MB of its process tree (sampled: ``ru_maxrss`` would report the
    benchmark's own size, which a forked child inherits)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, **kw)
    sampler = _RssSampler(proc.pid)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    peak = sampler.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} exited with {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime, peak


# -- runs -------------------------------------------------------------------------------


def _exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except s3.exceptions.ClientError:
        return False
    return True


def run_worker(  # noqa: PLR0917 - called from a table of runs
    ctx: dict[str, Any], url: str, name: str, raw: int, gz_size: int, sha: str
) -> Figures:
    s3, sqs = ctx["s3"], ctx["sqs"]
    queue_url, dlq_url = create_queue_pair(sqs, f"bench-{uuid.uuid4().hex[:8]}")
    env = {
        **ctx["env"],
        "EXPORTPIPE_BUCKET": ctx["bucket"],
        "EXPORTPIPE_JOBS_QUEUE_URL": queue_url,
        "EXPORTPIPE_JOBS_DLQ_URL": dlq_url,
        "EXPORTPIPE_DOWNLOAD_ALLOWED_HOSTS": "127.0.0.1",
        "EXPORTPIPE_WAIT_TIME_SECONDS": "1",
        "EXPORTPIPE_CONCURRENCY": "1",
        "EXPORTPIPE_SPOOL_DIR": str(ctx["tmp"]),
        "EXPORTPIPE_METRICS_FLUSH_SECONDS": "3600",
        "EXPORTPIPE_LOG_LEVEL": "WARNING",
    }
    log = (ctx["tmp"] / f"worker-{name}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "exportpipe.worker"], env=env, stdout=log, stderr=log
    )
    try:
        time.sleep(3.0)  # imports done and polling: the idle baseline
        base_cpu = _proc_cpu(proc.pid)
        export_id = f"bench-{uuid.uuid4().hex[:8]}"
        export = ExportKeys.of("exports/", export_id)
        job = DownloadJob(
            job_id=job_id_for(export_id, "f1"),
            export_id=export_id,
            file_id="f1",
            file_name=name,
            url=url,
            size_bytes=gz_size,
            sha256=sha,
            compression="gzip",
            format="jsonl",
            destination=S3Destination(bucket=ctx["bucket"], prefix=export.root),
        )
        keys = export.file("f1")
        manifest, rejected = keys.manifest, keys.rejected
        started = time.perf_counter()
        sqs.send_message(QueueUrl=queue_url, MessageBody=encode(job))
        # Polling costs the moto server (shared by the run) a request each time: look
        # for the manifest every 0.1 s (1 % of a 10 s run) and for a rejection rarely.
        polls = 0
        while True:
            if proc.poll() is not None:
                raise RuntimeError("the worker exited; see its log in the temp dir")
            if time.perf_counter() - started > 900:
                raise RuntimeError("no manifest after 900 s; see the worker's log")
            if _exists(s3, ctx["bucket"], manifest):
                break
            polls += 1
            if polls % 20 == 0 and _exists(s3, ctx["bucket"], rejected):
                raise RuntimeError("the worker rejected the job; see its log")
            time.sleep(0.1)
        wall = time.perf_counter() - started
        cpu = _proc_cpu(proc.pid) - base_cpu
        rss = _proc_hwm_mb(proc.pid)
        body = s3.get_object(Bucket=ctx["bucket"], Key=manifest)["Body"].read()
        out_bytes = sum(m["size"] for m in json.loads(body)["members"])
        if out_bytes != raw:
            raise RuntimeError(f"worker landed {out_bytes} bytes, expected {raw}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
    return Figures("worker (isal+msgspec+parallel MPU)", out_bytes, wall, cpu, rss)


_PLAIN = r"""
import gzip, json, sys, urllib.request
import boto3, smart_open
url, uri = sys.argv[1], sys.argv[2]
client = boto3.client("s3")
with urllib.request.urlopen(url) as resp, gzip.GzipFile(fileobj=resp) as lines, \
        smart_open.open(uri, "wb", compression="disable",
                        transport_params={"client": client}) as out:
    n = 0
    for line in lines:
        if line.strip():
            if not isinstance(json.loads(line), dict):
                raise SystemExit("not an object")
            n += 1
        out.write(line)
"""

_STDIN_UPLOAD = r"""
import sys, boto3
bucket, key = sys.argv[1], sys.argv[2]
boto3.client("s3").upload_fileobj(sys.stdin.buffer, bucket, key)
"""


def run_plain(ctx: dict[str, Any], url: str, raw: int) -> Figures:
    key = f"baseline-a/{uuid.uuid4().hex}"
    wall, cpu, rss = _run_child(
        [sys.executable, "-c", _PLAIN, url, f"s3://{ctx['bucket']}/{key}"], ctx["env"]
    )
    size = ctx["s3"].head_object(Bucket=ctx["bucket"], Key=key)["ContentLength"]
    assert size == raw, (size, raw)
    return Figures("(a) gzip+json.loads+smart_open", raw, wall, cpu, rss)


def run_shell(ctx: dict[str, Any], url: str, raw: int) -> Figures:
    key = f"baseline-b/{uuid.uuid4().hex}"
    aws = shutil.which("aws")
    if aws:
        upload = f"{aws} --endpoint-url {ctx['endpoint']} s3 cp - s3://{ctx['bucket']}/{key}"
        note = (
            "aws CLI "
            + subprocess.run([aws, "--version"], capture_output=True, text=True, check=False)
            .stdout.split(" ")[0]
            .strip()
        )
        note = note or "aws CLI"
    else:
        upload = f"{sys.executable} -c '{_STDIN_UPLOAD}' {ctx['bucket']} {key}"
        note = "aws CLI absent: boto3 upload_fileobj(stdin) instead of aws s3 cp -"
    script = f"set -o pipefail; curl -sS --fail '{url}' | gzip -dc | {upload}"
    wall, cpu, rss = _run_child(["bash", "-c", script], ctx["env"], stdout=subprocess.DEVNULL)
    size = ctx["s3"].head_object(Bucket=ctx["bucket"], Key=key)["ContentLength"]
    assert size == raw, (size, raw)
    return Figures("(b) curl|gzip -dc|aws s3 cp -", raw, wall, cpu, rss, note)


# -- main -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="uncompressed MB (large file)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--skip-baselines", action="store_true")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="exportpipe-bench-"))
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    env.pop("AWS_PROFILE", None)
    http: subprocess.Popen[bytes] | None = None
    try:
        sizes = [("large", args.size_mb * MB), ("small", args.size_mb * MB // 10)]
        files = {}
        import hashlib

        for label, size in sizes:
            path = tmp / f"{label}.jsonl.gz"
            t0 = time.perf_counter()
            raw, gz = generate(path, size)
            digest = hashlib.sha256()
            with path.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
            sha = digest.hexdigest()
            files[label] = (path, raw, gz, sha)
            print(
                f"generated {label}: {raw / MB:.0f} MB JSONL, {gz / MB:.0f} MB gzip "
                f"({raw / gz:.1f}:1) in {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
        _BLOCKS.clear()
        port = free_port()
        http = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "http.server",
                str(port),
                "--bind",
                "127.0.0.1",
                "--directory",
                str(tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with MotoServer(log_file=tmp / "moto.log") as moto:
            env["AWS_ENDPOINT_URL"] = moto.endpoint
            os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
            s3 = boto3.client("s3", endpoint_url=moto.endpoint)
            sqs = boto3.client("sqs", endpoint_url=moto.endpoint)
            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            s3.create_bucket(Bucket=bucket)
            ctx = {
                "s3": s3,
                "sqs": sqs,
                "bucket": bucket,
                "env": env,
                "tmp": tmp,
                "endpoint": moto.endpoint,
            }
            time.sleep(0.5)
            print(f"\n{os.cpu_count()} CPUs; moto {moto.endpoint}; files served from {tmp}\n")
            header = (
                f"{'run':<34} {'out MB':>9} {'wall s':>8} {'MB/s':>8} {'CPU s/GB':>9} "
                f"{'peak RSS':>9}"
            )
            for label, _ in sizes:
                path, raw, gz, sha = files[label]
                url = f"http://127.0.0.1:{port}/{path.name}?X-Amz-Signature=not-logged"
                print(f"== {label}: {raw / MB:.0f} MB uncompressed, {gz / MB:.0f} MB gzip")
                print(header, flush=True)
                runs: list[tuple[Any, ...]] = [(run_worker, ctx, url, path.name, raw, gz, sha)]
                if not args.skip_baselines:
                    runs += [(run_plain, ctx, url, raw), (run_shell, ctx, url, raw)]
                for fn, *fn_args in runs:
                    print(fn(*fn_args).row(), flush=True)
                    # Keep moto's memory and the next run's CPU apart.
                    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                        for obj in page.get("Contents", []):
                            s3.delete_object(Bucket=bucket, Key=obj["Key"])
                print(flush=True)
    finally:
        if http is not None:
            http.terminate()
            http.wait()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
