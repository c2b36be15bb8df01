"""Redis faults against real worker processes: a restart mid-job, a broker that is down
when the worker starts or when the producer sends.

Each test runs its own `redis-server` (AOF, `appendfsync always`, in a tmp dir, on a free
port), so restarting or stopping it never disturbs the shared Redis; `RedisServer` is also
used by tests/test_security.py. Every process started here is killed, even on failure.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import redis

from alknet_firewall.queue.jobs import JobBook
from alknet_firewall.queue.store import ResultStore
from alknet_firewall_producer import status
from alknet_firewall_producer.enqueue import EnqueueReport, enqueue
from tests.queue_helpers import (
    Namespace,
    WorkerProcess,
    fake_verdict,
    free_port,
    namespace,
    worker_process,
)

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]

FAST = {
    "ALKNET_QUEUE__VISIBILITY_TIMEOUT_S": "6",
    "ALKNET_QUEUE__WORKER__BATCH_TIME_LIMIT_S": "2",
    "ALKNET_QUEUE__WORKER__RETRY_BACKOFF_S": "0.1",
    "ALKNET_QUEUE__WORKER__RETRY_BACKOFF_MAX_S": "0.5",
    "ALKNET_QUEUE__PRODUCER__CONNECT_BACKOFF_S": "0.2",
}


class RedisServer:
    """A redis-server of the test's own: AOF on disk, restartable on the same dir and port."""

    def __init__(self, folder: Path, *args: str, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = folder / "redis.log"
        folder.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.folder),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--logfile",
            str(self.log),
            *self.args,
        ]

    def start(self, ready: Sequence[str] | None = None) -> None:
        """Start it and wait until it answers (PING, or the `ready` command line)."""
        self.proc = subprocess.Popen(self.command(), start_new_session=True)
        probe = ready or ["redis-cli", "-p", str(self.port), "ping"]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited: {self.log_tail()}")
            done = subprocess.run(probe, capture_output=True, text=True, check=False)
            if done.returncode == 0 and "LOADING" not in done.stdout + done.stderr:
                return
            time.sleep(0.05)
        raise AssertionError(f"redis-server did not answer on {self.port}: {self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM: Redis fsyncs the AOF and exits, as `SHUTDOWN` would."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.proc = None

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""


@contextlib.contextmanager
def redis_server(folder: Path, *args: str, port: int | None = None) -> Iterator[RedisServer]:
    server = RedisServer(folder, *args, port=port)
    server.start()
    try:
        yield server
    finally:
        server.stop(signal.SIGKILL)


def own_namespace(url: str, **env: str) -> Namespace:
    """A queue namespace on another Redis than the shared one (broker and results)."""
    ns = Namespace(**env)
    ns.env["ALKNET_QUEUE__BROKER_URL"] = url
    ns.env["ALKNET_QUEUE__RESULT_URL"] = url
    ns.client = redis.Redis.from_url(url, decode_responses=True)
    return ns


def write_corpus(path: Path, n: int, tag: str) -> list[str]:
    texts = [f"{tag} document {i} " + "word " * (i % 7) for i in range(n)]
    path.write_text(
        "".join(json.dumps({"id": f"{tag}{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    )
    return texts


def assert_exactly_one_verdict_each(ns: Namespace, job: str, texts: list[str]) -> None:
    """One row per document (no more: the results hash is keyed per document), each the
    fake model's verdict, and the counters agree."""
    jobs = JobBook(ResultStore.from_settings(ns.settings().queue))
    rows = list(jobs.rows(job))
    assert len(rows) == len(texts)
    assert ns.client.hlen(f"{ns.prefix}job:{job}:results") == len(texts)
    for row, text in zip(rows, texts, strict=True):
        assert row is not None, "a document has no verdict"
        assert row["decision"] == fake_verdict(text).decision.value
        assert row["score"] == pytest.approx(fake_verdict(text).score)
    progress = jobs.progress(job)
    assert progress is not None
    assert (progress.total, progress.done, progress.errors) == (len(texts), len(texts), 0)


def missing(ns: Namespace, job: str) -> list[str]:
    """Fields of the job's documents that have no row (yet)."""
    done = {str(f) for f in ns.client.hkeys(f"{ns.prefix}job:{job}:results")}
    fields = (str(f) for f in ns.client.zrange(f"{ns.prefix}job:{job}:docs", 0, -1))
    return [f for f in fields if f not in done]


def where_are_they(ns: Namespace, job: str) -> str:
    """For a failure message: the documents without a row, and what Redis holds of them."""
    fields = missing(ns, job)
    queued = ns.client.lrange(f"{ns.prefix}screen", 0, -1)
    unacked = ns.client.hvals(f"{ns.prefix}unacked")
    ids = [f.split(":", 1)[1] for f in fields]
    held = sum(any(f'"{i}"' in m for m in queued + unacked) for i in ids)
    deliveries = ns.client.hgetall(f"{ns.prefix}job:{job}:deliveries")
    return (
        f"{len(fields)} without a row ({ids[:10]}); {held} of them still in the queue or "
        f"unacked; queue {len(queued)}, unacked {len(unacked)}; deliveries {deliveries}"
    )


# How many times the restart test runs (each ~15-30 s). A run that loses a message only
# passes because the workers re-drive it, so more runs try that path more often: set
# ALKNET_TEST_REDIS_RESTARTS=20 for the 20 runs.
RESTARTS = int(os.environ.get("ALKNET_TEST_REDIS_RESTARTS", "2"))


@pytest.mark.parametrize("run", range(RESTARTS))
def test_redis_restarted_mid_job_every_job_completes_on_its_own(tmp_path: Path, run: int) -> None:
    with redis_server(tmp_path / "redis") as server:
        env = FAST | {
            "ALKNET_QUEUE__PRODUCER__MESSAGE_DOCS": "8",
            "ALKNET_QUEUE__WORKER__REDRIVE_AFTER_S": "4",
        }
        ns = own_namespace(f"redis://127.0.0.1:{server.port}/0", **env)
        settings = ns.settings()
        jobs = JobBook(ResultStore.from_settings(settings.queue))
        texts = write_corpus(tmp_path / "a.jsonl", 200, "a")
        late = write_corpus(tmp_path / "b.jsonl", 50, "b")
        log = tmp_path / "worker.log"
        # Slow forward passes (0.3 s) so that the restart lands while batches are in flight.
        with worker_process(ns, log, "--concurrency=8", FAKE_DELAY_S="0.3") as worker:
            enqueue(settings, str(tmp_path / "a.jsonl"), "a")
            ns.wait_for(lambda: jobs.progress("a").done >= 16, 30, "a few batches")  # type: ignore[union-attr]
            server.stop()  # SIGTERM: a clean shutdown that persists the AOF
            # A producer that starts while Redis is down retries with backoff and gets through.
            reports: list[EnqueueReport] = []
            sender = threading.Thread(
                target=lambda: reports.append(enqueue(settings, str(tmp_path / "b.jsonl"), "b"))
            )
            sender.start()
            time.sleep(1.0)  # the outage: long enough for the worker to lose its connections
            server.start()
            sender.join(timeout=30)
            assert not sender.is_alive() and reports and reports[0].sent == 50
            # Nobody runs enqueue again: a message Kombu lost in the restart (its BRPOP
            # answered, its unacked record never written: celery/kombu#305) is re-driven
            # by the worker from the job's outbox.
            for job in ("a", "b"):
                try:
                    ns.wait_for(
                        lambda job=job: jobs.progress(job).finished,  # type: ignore[union-attr, misc]
                        90,
                        f"job {job} to finish on its own",
                    )
                except AssertionError as exc:
                    raise AssertionError(f"{exc}: {where_are_they(ns, job)}") from None
            assert worker.proc.poll() is None, "the worker died instead of reconnecting"
            # Records of messages delivered on the connection the restart cut can stay in
            # the unacked hash (no live channel holds them, so no heartbeat vouches for
            # them). Once their visibility timeout passes they are restored, screened again
            # (their rows are stored: nothing changes) and acked: the queue drains itself.
            ns.wait_for(
                lambda: (
                    ns.client.hlen(f"{ns.prefix}unacked") == 0
                    and ns.client.llen(f"{ns.prefix}screen") == 0
                ),
                60,
                "the unacked records left by the restart to drain",
            )
        assert_exactly_one_verdict_each(ns, "a", texts)
        assert_exactly_one_verdict_each(ns, "b", late)
        # Nothing is left waiting, reserved, unacked or outstanding.
        assert ns.client.llen(f"{ns.prefix}screen") == 0
        assert ns.client.hlen(f"{ns.prefix}unacked") == 0
        assert ns.client.hlen(f"{ns.prefix}job:a:chunks") == 0
        assert "Connection" in log.read_text()  # the worker did see the outage
        redriven = jobs.progress("a").redriven  # type: ignore[union-attr]
        print(f"run {run}: {redriven} chunks of job a re-driven")


def test_a_worker_whose_result_store_is_down_exits_with_a_clear_message(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    ns = own_namespace(dead)
    log = tmp_path / "worker.log"
    proc = WorkerProcess(ns, log)
    try:
        code = proc.proc.wait(timeout=60)
    finally:
        proc.stop()
    text = log.read_text()
    assert code != 0
    assert "the worker cannot start" in text and "Connection refused" in text


def test_a_worker_waits_for_a_broker_that_is_down_then_screens(tmp_path: Path) -> None:
    """Results reachable, broker not: the worker says it retries, and works once it is up."""
    port = free_port()
    with namespace(**FAST) as ns:
        ns.env["ALKNET_QUEUE__BROKER_URL"] = f"redis://127.0.0.1:{port}/0"
        log = tmp_path / "worker.log"
        proc = WorkerProcess(ns, log)
        try:
            ns.wait_for(lambda: "Trying again" in log.read_text(), 60, "a retry message")
            assert proc.proc.poll() is None, "the worker gave up at once"
            assert f"Cannot connect to redis://:**@127.0.0.1:{port}/0" in log.read_text()
            server = RedisServer(tmp_path / "redis", port=port)
            server.start()
            try:
                settings = ns.settings()
                texts = write_corpus(tmp_path / "in.jsonl", 10, "w")
                enqueue(settings, str(tmp_path / "in.jsonl"), "w")
                jobs = JobBook(ResultStore.from_settings(settings.queue))
                ns.wait_finished(jobs, "w", what="the job, once the broker is up")
                rows = list(jobs.rows("w"))
                assert [r["decision"] for r in rows if r] == [
                    fake_verdict(t).decision.value for t in texts
                ]
            finally:
                server.stop(signal.SIGKILL)
        except BaseException:
            print(proc.log_tail())
            raise
        finally:
            proc.stop()


def test_a_lost_message_is_re_driven_by_the_workers_and_status_says_so(tmp_path: Path) -> None:
    env = FAST | {
        "ALKNET_QUEUE__PRODUCER__MESSAGE_DOCS": "10",
        "ALKNET_QUEUE__WORKER__REDRIVE_AFTER_S": "2",
    }
    with namespace(**env) as ns:
        settings = ns.settings()
        jobs = JobBook(ResultStore.from_settings(settings.queue))
        texts = write_corpus(tmp_path / "in.jsonl", 30, "r")
        assert enqueue(settings, str(tmp_path / "in.jsonl"), "lost").messages == 3
        # One message vanishes as in kombu#305: taken off the list, never recorded as
        # unacked. The job's outbox still has its chunk.
        assert ns.client.rpop(f"{ns.prefix}screen") is not None
        with worker_process(ns, tmp_path / "worker.log"):
            ns.wait_for(
                lambda: jobs.progress("lost").finished,  # type: ignore[union-attr]
                30,
                "the job to finish without anyone sending again",
            )
        assert_exactly_one_verdict_each(ns, "lost", texts)
        progress = jobs.progress("lost")
        assert progress is not None and progress.redriven == 1
        out = io.StringIO()
        status.show(jobs, "lost", out=out)
        assert "stalled, re-drove 1 lost messages (last 20" in out.getvalue()
        assert ns.client.hlen(f"{ns.prefix}job:lost:chunks") == 0  # the outbox is empty
