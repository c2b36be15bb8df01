"""What the queue costs per document when the model costs nothing.

A model-free benchmark of the queued path: a redis-server of its own (no persistence,
free port, temp dir), N real worker processes whose screener answers at once (a fixed
verdict, no tokenizer, no model), and the producer (`enqueue`, in this process). It
times one job from the first record read to the last row stored, and prints the
figures; the last line is JSON with `docs_per_s`. Whatever a worker does per document
or per message besides the forward pass (Celery, Kombu, Redis round trips, JSON,
digests, rows) is what it measures: the ceiling the queue puts on a fast GPU.

    .venv/bin/python bench/queue_overhead.py                       # 20,000 documents, 1 worker
    .venv/bin/python bench/queue_overhead.py --docs 5000 --workers 2

Workers run with the shipped settings ([queue] of config.toml defaults) except the
Redis URLs, the key prefix and the metrics port (off). The machine's other load counts:
compare figures taken in one session, under the same load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import redis

from alknet_firewall.schema import Decision, Verdict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # soak.py: a redis-server of our own, stopping one
PREFIX = "bench:"
JOB = "overhead"


def instant_verdicts(texts: Sequence[str]) -> list[Verdict]:
    """The screener's whole work: one fixed verdict per text."""
    verdict = Verdict(decision=Decision.ALLOW, score=0.0, codebook_version="instant-1")
    return [verdict] * len(texts)


class InstantScreener:
    """A screener that returns at once: the queue's cost is all that is left. It has the
    firewall's two halves, so the worker prepares each batch ahead as it does for the
    firewall, with the Redis round trips that counting a preparation costs."""

    codebook_version = "instant-1"

    def screen_batch(self, texts: Sequence[str]) -> list[Verdict]:
        return instant_verdicts(texts)

    def prepare(self, texts: Sequence[str]) -> Sequence[str]:
        return texts

    def screen_prepared(self, prepared: Sequence[str]) -> list[Verdict]:
        return instant_verdicts(prepared)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        # Only read by queue versions that budget batches by counted tokens.
        return [max(1, len(t) // 4) for t in texts]


def serve_worker(argv: Sequence[str]) -> None:
    """Entry point of one worker process (this script with --serve-worker)."""
    from alknet_firewall.config import load_settings
    from alknet_firewall_worker.runtime import WorkerApp

    app = WorkerApp(load_settings(), load_screener=lambda _settings: InstantScreener())
    app.worker_main(["worker", "--loglevel=WARNING", *argv])


def write_corpus(path: Path, n: int) -> None:
    """`n` unique documents of about 25 words (150 characters): no cache hits."""
    words = [
        "the",
        "library",
        "opens",
        "new",
        "hours",
        "for",
        "the",
        "river",
        "museum",
        "and",
        "our",
        "team",
        "reported",
    ]
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            text = " ".join(words[(i + k) % len(words)] for k in range(24)) + f" on day {i}."
            f.write(json.dumps({"id": f"d{i}", "text": text}) + "\n")


@contextlib.contextmanager
def workers(count: int, env: dict[str, str], log: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    from soak import stop

    procs = []
    with log.open("ab") as out:
        for _ in range(count):
            procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--serve-worker"],
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        try:
            yield procs
        finally:
            for proc in procs:
                stop(proc)


def run(args: argparse.Namespace) -> dict[str, object]:
    from soak import redis_server

    from alknet_firewall.config import load_settings
    from alknet_firewall.queue.jobs import JobBook
    from alknet_firewall.queue.store import ResultStore
    from alknet_firewall_producer.enqueue import enqueue

    folder = Path(tempfile.mkdtemp(prefix="queue-overhead-"))
    try:
        source = folder / "docs.jsonl"
        write_corpus(source, args.docs)
        with redis_server(folder) as port:
            url = f"redis://127.0.0.1:{port}/0"
            env = {
                "ALKNET_QUEUE__BROKER_URL": url,
                "ALKNET_QUEUE__RESULT_URL": url,
                "ALKNET_QUEUE__KEY_PREFIX": PREFIX,
                "ALKNET_QUEUE__WORKER__METRICS_PORT": "0",
            }
            os.environ.update(env)
            # The shipped defaults (config.toml is held to them by a test), not ./config.toml.
            (folder / "config.toml").write_text("")
            os.environ["ALKNET_CONFIG"] = str(folder / "config.toml")
            settings = load_settings()
            client = redis.Redis.from_url(url)
            book = JobBook(ResultStore.from_settings(settings.queue))
            paths = (ROOT / "src", ROOT / "worker", ROOT / "producer")
            worker_env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths))}
            with workers(args.workers, worker_env, folder / "workers.log") as procs:
                deadline = time.monotonic() + 60
                while not client.exists(f"{PREFIX}codebook"):
                    if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                        raise SystemExit((folder / "workers.log").read_text()[-3000:])
                    time.sleep(0.1)
                started = time.monotonic()
                report = enqueue(settings, str(source), JOB)
                enqueued = time.monotonic()
                while not ((p := book.progress(JOB)) and p.finished):
                    if time.monotonic() - started > args.timeout_s:
                        raise SystemExit(f"not finished after {args.timeout_s} s: {p}")
                    time.sleep(0.02)
                finished = time.monotonic()
            rows = sum(row is not None for row in book.rows(JOB))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if rows != args.docs or report.sent != args.docs:
        raise SystemExit(f"{rows} rows and {report.sent} sent for {args.docs} documents")
    seconds = finished - started
    return {
        "docs": args.docs,
        "workers": args.workers,
        "seconds": round(seconds, 3),
        "enqueue_s": round(enqueued - started, 3),
        "docs_per_s": round(args.docs / seconds, 1),
        "load_1min": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def main() -> None:
    if sys.argv[1:2] == ["--serve-worker"]:
        serve_worker(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--timeout-s", type=float, default=900.0)
    args = parser.parse_args()
    result = run(args)
    print(
        f"{result['docs']:,} documents through {result['workers']} worker process(es) in "
        f"{result['seconds']} s (enqueue alone {result['enqueue_s']} s): "
        f"{result['docs_per_s']:,} docs/s; load average {result['load_1min']} on "
        f"{result['cpus']} CPUs"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
