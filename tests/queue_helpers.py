"""Helpers of the queue tests: an isolated Redis namespace, worker processes, a fake model.

Every test gets its own key prefix (broker keys included, through Kombu's
global_keyprefix) and deletes exactly the keys under it afterwards. Worker processes run
in their own process group and are killed, group and all, even when the test fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import redis

from alknet_firewall.config import Settings, load_settings
from alknet_firewall.queue.jobs import JobBook
from alknet_firewall.queue.message import ScreenChunk
from alknet_firewall.schema import Alarm, Decision, Verdict
from alknet_firewall.screening import Screener
from alknet_firewall_worker.batching import BatchStats, MicroBatcher

REDIS_URL = "redis://127.0.0.1:6379/7"  # the queue tests' database; keys are prefixed
ROOT = Path(__file__).resolve().parents[1]
FAKE_CODEBOOK = "fake-codebook-1"
# What a worker subprocess imports from this checkout: the three packages' folders, and
# the root and tests/ for the test helpers.
SOURCE_PATH = os.pathsep.join(
    str(path) for path in (ROOT / "src", ROOT / "worker", ROOT / "producer", ROOT, ROOT / "tests")
)


class FakeScreener:
    """A model stand-in: a verdict derived from the text's hash, batches recorded.

    A text containing "POISON" makes any forward pass that holds it raise; `delay_s`
    makes every forward pass slow, so a test can kill a worker in the middle of one.
    """

    codebook_version = FAKE_CODEBOOK

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.batches: list[int] = []

    def screen_batch(self, texts: Sequence[str]) -> list[Verdict]:
        self.batches.append(len(texts))
        time.sleep(self.delay_s)
        if any("POISON" in t for t in texts):
            raise RuntimeError("the fake model chokes on POISON")
        return [fake_verdict(t) for t in texts]


class Sent:
    """Stands in for sending chunks (a worker's `resend`, the re-drive's `send`): keeps them."""

    def __init__(self) -> None:
        self.chunks: list[ScreenChunk] = []

    def __call__(self, chunks: Sequence[ScreenChunk]) -> None:
        self.chunks.extend(chunks)


def fake_verdict(text: str) -> Verdict:
    """The fake model's deterministic verdict for `text`."""
    score = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 2**32
    decision = Decision.BLOCK if score > 0.9 else Decision.FLAG if score > 0.7 else Decision.ALLOW
    alarms = [Alarm(signal="fake", strength=score, start=0, end=len(text))] if score > 0.7 else []
    return Verdict(
        decision=decision,
        score=score,
        alarms=alarms,
        codebook_version=FAKE_CODEBOOK,
        tokens=len(text.split()),
        windows=1,
    )


def eager_batcher(
    screen_batch: Callable[[Sequence[str]], list[Verdict]],
    *,
    token_budget: int = 1000,
    max_parcels: int = 4,
    max_wait_s: float = 0.0,
    time_limit_s: float = 60.0,
    on_batch: Callable[[BatchStats], None] = lambda _stats: None,
    on_overrun: Callable[[float], None] = lambda _seconds: None,
    on_start: Callable[[list[object]], None] = lambda _tags: None,
    on_end: Callable[[list[object]], None] = lambda _tags: None,
    prepare: Callable[[Sequence[str]], Callable[[], list[Verdict]]] | None = None,
) -> MicroBatcher:
    """A micro-batcher for tests of what surrounds it: passes start at once (no wait for
    more texts), the time limit is far away, and callbacks do nothing unless given."""
    return MicroBatcher(
        screen_batch,
        token_budget=token_budget,
        max_parcels=max_parcels,
        max_wait_s=max_wait_s,
        time_limit_s=time_limit_s,
        on_batch=on_batch,
        on_overrun=on_overrun,
        on_start=on_start,
        on_end=on_end,
        prepare=prepare,
    )


class Slowed:
    """A screener whose forward passes take at least `delay_s`: time to kill a worker."""

    def __init__(self, inner: Screener, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.codebook_version = inner.codebook_version

    def screen_batch(self, texts: Sequence[str]) -> list[Verdict]:
        time.sleep(self.delay_s)
        return self.inner.screen_batch(texts)


def test_worker_main() -> None:
    """Entry point of a test worker process (see WorkerProcess).

    TEST_SCREENER=fake screens with FakeScreener, anything else with the real Firewall
    (the tiny model when the test passes `tiny_env`); FAKE_DELAY_S slows forward passes.
    """
    from alknet_firewall_worker.runtime import WorkerApp, load_firewall

    delay = float(os.environ.get("FAKE_DELAY_S", "0"))
    fake = os.environ.get("TEST_SCREENER") == "fake"

    def load_screener(settings: Settings) -> Screener:
        screener = FakeScreener() if fake else load_firewall(settings)
        return Slowed(screener, delay) if delay else screener

    app = WorkerApp(load_settings(), load_screener=load_screener)
    app.worker_main(["worker", "--loglevel=INFO", *sys.argv[1:]])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Namespace:
    """One test's corner of Redis: a key prefix, its settings and environment."""

    def __init__(self, **queue_env: str) -> None:
        self.prefix = f"test-{uuid.uuid4().hex[:12]}:"
        self.env = {
            "ALKNET_QUEUE__BROKER_URL": REDIS_URL,
            "ALKNET_QUEUE__RESULT_URL": REDIS_URL,
            "ALKNET_QUEUE__KEY_PREFIX": self.prefix,
            **queue_env,
        }
        self.client = redis.Redis.from_url(REDIS_URL, decode_responses=True)

    def settings(self) -> Settings:
        """Settings as a process with this environment loads them."""
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            return load_settings()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def wait_for(self, check: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
            time.sleep(0.1)

    def wait_finished(self, jobs: JobBook, job: str, timeout_s: float = 60, what: str = "") -> None:
        """Wait until `job` is enqueued in full and every one of its documents has a row."""
        self.wait_for(
            lambda: (p := jobs.progress(job)) is not None and p.finished, timeout_s, what or job
        )

    def cleanup(self) -> None:
        keys = list(self.client.scan_iter(match=f"{self.prefix}*", count=1000))
        if keys:
            self.client.delete(*keys)


@contextlib.contextmanager
def namespace(**queue_env: str) -> Iterator[Namespace]:
    ns = Namespace(**queue_env)
    try:
        yield ns
    finally:
        ns.cleanup()


class WorkerProcess:
    """A worker in its own process group; `kill` sends a signal to the whole group."""

    def __init__(self, ns: Namespace, log: Path, *args: str, fake: bool = True, **env: str) -> None:
        self.metrics_port = free_port()
        full_env = {
            **os.environ,
            **ns.env,
            "ALKNET_QUEUE__WORKER__METRICS_PORT": str(self.metrics_port),
            "PYTHONPATH": SOURCE_PATH,
            "TEST_SCREENER": "fake" if fake else "real",
            **env,
        }
        code = "import queue_helpers; queue_helpers.test_worker_main()"
        command = [sys.executable, "-c", code, *args]
        self.log = log
        self._log_file = log.open("ab")
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=full_env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed as one
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL if it lingers."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.kill()  # whatever is left of the group
        self._log_file.close()

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def metric(self, name: str) -> float:
        """Sum of the samples named `name` on the worker's /metrics page."""
        import urllib.request

        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as page:
            text = page.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total


@contextlib.contextmanager
def worker_process(
    ns: Namespace, log: Path, *args: str, fake: bool = True, **env: str
) -> Iterator[WorkerProcess]:
    """A started worker, ready (its codebook published); stopped on exit, even on failure."""
    proc = WorkerProcess(ns, log, *args, fake=fake, **env)
    try:
        ns.wait_for(lambda: _started(ns, proc), 60, "the worker to start")
        yield proc
    except BaseException:
        print(proc.log_tail(), file=sys.stderr)
        raise
    finally:
        proc.stop()


def _started(ns: Namespace, proc: WorkerProcess) -> bool:
    if proc.proc.poll() is not None:
        raise AssertionError(f"the worker exited with {proc.proc.returncode}")
    return bool(ns.client.exists(f"{ns.prefix}codebook"))
