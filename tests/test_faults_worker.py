"""Worker faults: a poison document that hangs its forward pass past the time limit or
kills its worker outright (in the forward pass, or while its batch is tokenised ahead),
a document over the length limit sent through the queue.
(SIGKILL mid-batch and a model that raises are covered in tests/test_queue_e2e.py.)

The poison uses the fake model of queue_helpers with one change, made in the worker
process through the worker's own seam (`WorkerApp(load_screener=...)`): a batch that
holds "HANG" never returns, one that holds "CRASH" ends the process at once, and so does
preparing one that holds "TOKBOOM". Production code has no hook for any; the watchdog
(`[queue.worker].batch_time_limit_s`), the split of a redelivered chunk and the delivery
cap are what is under test.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from alknet_firewall.config import Settings, load_settings
from alknet_firewall.firewall import Firewall
from alknet_firewall.queue.jobs import JobBook
from alknet_firewall.queue.store import ResultStore
from alknet_firewall.schema import Verdict
from alknet_firewall.screening import Screener
from alknet_firewall_producer.enqueue import enqueue
from alknet_firewall_worker.runtime import OVERRUN_EXIT_CODE
from tests.queue_helpers import (
    ROOT,
    SOURCE_PATH,
    FakeScreener,
    Namespace,
    WorkerProcess,
    eager_batcher,
    fake_verdict,
    free_port,
    namespace,
    worker_process,
)

pytestmark = pytest.mark.redis


CRASH_EXIT_CODE = 77  # what a worker killed by the "CRASH" text exits with


class HangingScreener(FakeScreener):
    """The fake model, except that a forward pass holding "HANG" never ends and one
    holding "CRASH" ends the process (as a segfault or an OOM kill would). Like the
    firewall it has a model-free half, which the worker runs a batch ahead: preparing a
    batch that holds "TOKBOOM" ends the process too (a tokenizer that crashes)."""

    def prepare(self, texts: Sequence[str]) -> list[str]:
        if any("TOKBOOM" in t for t in texts):
            os._exit(CRASH_EXIT_CODE)
        return list(texts)

    def screen_prepared(self, prepared: list[str]) -> list[Verdict]:
        if any("HANG" in t for t in prepared):
            time.sleep(3600)
        if any("CRASH" in t for t in prepared):
            os._exit(CRASH_EXIT_CODE)
        return super().screen_batch(prepared)

    def screen_batch(self, texts: Sequence[str]) -> list[Verdict]:
        return self.screen_prepared(self.prepare(texts))


def hanging_worker_main() -> None:
    """Entry point of the worker process of the hang test."""
    from alknet_firewall_worker.runtime import WorkerApp

    def load_screener(settings: Settings) -> Screener:
        del settings
        return HangingScreener()

    app = WorkerApp(load_settings(), load_screener=load_screener)
    app.worker_main(["worker", "--loglevel=INFO", *sys.argv[1:]])


class HangingWorker(WorkerProcess):
    """A WorkerProcess (stop, kill, logs) that runs `hanging_worker_main`."""

    def __init__(self, ns: Namespace, log: Path, *args: str) -> None:
        # Not super().__init__: that starts the usual entry point.
        self.metrics_port = free_port()
        self.log = log
        self._log_file = log.open("ab")
        code = "from tests.test_faults_worker import hanging_worker_main; hanging_worker_main()"
        env = {
            **os.environ,
            **ns.env,
            "ALKNET_QUEUE__WORKER__METRICS_PORT": str(self.metrics_port),
            "PYTHONPATH": SOURCE_PATH,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            cwd=ROOT,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() kills it as one
        )


def write_jsonl(path: Path, texts: list[str], prefix: str = "d") -> Path:
    path.write_text(
        "".join(json.dumps({"id": f"{prefix}{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    )
    return path


@pytest.mark.parametrize(
    ("poison", "exit_code"),
    [("HANG", OVERRUN_EXIT_CODE), ("CRASH", CRASH_EXIT_CODE), ("TOKBOOM", CRASH_EXIT_CODE)],
)
def test_a_poison_document_is_cornered_by_splitting_and_every_document_gets_one_verdict(
    tmp_path: Path, poison: str, exit_code: int
) -> None:
    # The watchdog fires 1 s into a forward pass; unacked messages come back 3 s later.
    # Chunks of 4: the poisoned chunk dies, is split (4 -> 2 -> 1) on each redelivery,
    # and the lone poison document dies twice (max_deliveries 2) before it gets an error
    # verdict: 4 deaths. Its chunk-mates all get their verdicts.
    limits = {
        "ALKNET_QUEUE__WORKER__BATCH_TIME_LIMIT_S": "1",
        "ALKNET_QUEUE__VISIBILITY_TIMEOUT_S": "3",
        "ALKNET_QUEUE__WORKER__MAX_DELIVERIES": "2",
        "ALKNET_QUEUE__WORKER__RETRY_BACKOFF_S": "0.1",
        "ALKNET_QUEUE__WORKER__RETRY_BACKOFF_MAX_S": "0.5",
        "ALKNET_QUEUE__PRODUCER__MESSAGE_DOCS": "4",
        # A worker that dies between Kombu's BRPOP and its unacked record loses the message
        # it was taking, and only re-drive sends it again. 5 s, far below the shipped 120 s,
        # on purpose: the sweep then fires between deaths and races the restore of the dead
        # worker's messages, so copies of the poisoned chunk go round. A copy of a chunk
        # that was split already is dropped and a chunk id is split once (store.py); before
        # those rules one CI run counted 11 deaths here instead of 4.
        "ALKNET_QUEUE__WORKER__REDRIVE_AFTER_S": "5",
    }
    texts = [f"ordinary text {i}" for i in range(12)]
    texts[5] = f"this one will {poison} the model"
    source = write_jsonl(tmp_path / "in.jsonl", texts)
    log = tmp_path / "worker.log"
    with namespace(**limits) as ns:
        settings = ns.settings()
        jobs = JobBook(ResultStore.from_settings(settings.queue))
        enqueue(settings, str(source), "hang")
        exits: list[int] = []
        worker = HangingWorker(ns, log, "--concurrency=8")
        try:
            # Play the orchestrator: restart the worker whenever it exits, until done.
            deadline = time.monotonic() + 180  # each death: a restart, a timeout
            while not (p := jobs.progress("hang")) or not p.finished:
                assert time.monotonic() < deadline, f"not finished; exits {exits}"
                if worker.proc.poll() is not None:
                    exits.append(worker.proc.returncode)
                    worker.stop()
                    worker = HangingWorker(ns, log, "--concurrency=8")
                time.sleep(0.1)
        except BaseException:
            print(worker.log_tail())
            raise
        finally:
            worker.stop()
        assert exits == [exit_code] * 4, exits  # chunks of 4, 2, then twice alone
        if poison == "HANG":
            assert "over the limit: exiting" in log.read_text()
        rows = list(jobs.rows("hang"))
        assert ns.client.hlen(f"{ns.prefix}job:hang:results") == 12
        assert all(row is not None for row in rows)
        hung = rows[5]
        assert hung is not None and hung["decision"] == "error"
        assert "gave up after 2 deliveries" in hung["error"]
        for row, text in zip(rows[:5] + rows[6:], texts[:5] + texts[6:], strict=True):
            expected = fake_verdict(text).decision.value
            assert row is not None and row["decision"] == expected, str(row)
        progress = jobs.progress("hang")
        assert progress is not None and (progress.done, progress.errors) == (12, 1)


def test_a_document_over_max_chars_gets_an_error_verdict_and_its_batch_mates_are_screened(
    tmp_path: Path, tiny_env: dict[str, str], tiny_firewall: Firewall
) -> None:
    # A producer with a higher limit than the workers (configured apart, or a message
    # published by other means): the worker's own limit still holds.
    texts = [f"The library opens at nine, note {i}." for i in range(7)]
    texts.insert(3, "Preheat the oven. " * 20)  # 360 characters
    source = write_jsonl(tmp_path / "in.jsonl", texts)
    with namespace(**tiny_env) as ns:
        settings = ns.settings()
        jobs = JobBook(ResultStore.from_settings(settings.queue))
        log = tmp_path / "worker.log"
        with worker_process(ns, log, "--concurrency=8", fake=False, ALKNET_LIMITS__MAX_CHARS="200"):
            assert enqueue(settings, str(source), "long").sent == 8  # the producer let it through
            ns.wait_finished(jobs, "long")
        rows = list(jobs.rows("long"))
        assert all(row is not None for row in rows)
        long_row = rows[3]
        assert long_row is not None and long_row["decision"] == "error"
        assert long_row["error"] == "text has 360 characters; limits.max_chars is 200"
        expected = tiny_firewall.screen_batch(texts[:3] + texts[4:])
        for row, verdict in zip(rows[:3] + rows[4:], expected, strict=True):
            assert row is not None and row["decision"] == verdict.decision.value
            assert row["score"] == pytest.approx(verdict.score, abs=2e-6)  # 6-decimal rounding
        # Refused once, not retried: a length limit does not pass on a second try.
        assert ns.client.hlen(f"{ns.prefix}job:long:deliveries") == 0
        progress = jobs.progress("long")
        assert progress is not None and (progress.done, progress.errors) == (8, 1)


def test_only_the_messages_in_a_forward_pass_are_counted_as_started() -> None:
    """What makes a message a suspect: being in the pass that hung, not queued behind it."""
    entered, release = threading.Event(), threading.Event()

    def screen(texts: Sequence[str]) -> list[Verdict]:
        entered.set()
        release.wait(30)
        return [fake_verdict(t) for t in texts]

    overruns: list[float] = []
    started: list[list[object]] = []
    batcher = eager_batcher(
        screen, max_parcels=8, time_limit_s=0.2, on_overrun=overruns.append, on_start=started.append
    )
    try:
        hung = batcher.submit(["first"], tag=("job", "hung"))
        assert entered.wait(10)
        for i in range(3):
            batcher.submit([f"queued {i}"], tag=("job", f"q{i}"))
        deadline = time.monotonic() + 10
        while not overruns:
            assert time.monotonic() < deadline, "the watchdog did not fire"
            time.sleep(0.02)
        assert started == [[("job", "hung")]]
    finally:
        release.set()
        batcher.close()
    assert hung.result(timeout=10) == [fake_verdict("first")]


def test_a_taken_metrics_port_costs_the_metrics_not_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Two worker processes on one host with the default port: the second must still screen.
    from alknet_firewall_worker import metrics

    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        metrics.serve(port, "screen", lambda: 0)
    assert f"cannot listen on port {port}" in caplog.text
    assert "--metrics-port" in caplog.text
