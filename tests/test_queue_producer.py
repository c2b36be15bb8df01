"""The producer against the real Redis, with no worker: what it sends, skips and stores."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from alknet_firewall.errors import QueueUnavailable
from alknet_firewall.queue.jobs import JobBook
from alknet_firewall.queue.store import ResultStore
from alknet_firewall_producer import cli
from alknet_firewall_producer.enqueue import enqueue
from tests.queue_helpers import ROOT, SOURCE_PATH, Namespace, namespace


@pytest.fixture
def ns() -> Iterator[Namespace]:
    with namespace() as ns:
        yield ns


def write_jsonl(path: Path, n: int, **extra: object) -> Path:
    lines = (json.dumps({"id": f"d{i}", "text": f"text {i}", **extra}) for i in range(n))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_producer_never_imports_torch() -> None:
    code = (
        "import sys, alknet_firewall_producer.cli, alknet_firewall_producer.enqueue, "
        "alknet_firewall_producer.status, alknet_firewall_producer.export, "
        "alknet_firewall.queue.app, alknet_firewall.queue.jobs, alknet_firewall_worker.celery; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch!'"
    )
    env = {"PYTHONPATH": SOURCE_PATH, "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)


@pytest.mark.redis
def test_enqueue_sends_json_messages_of_bounded_chunks_and_keeps_them_in_the_outbox(
    ns: Namespace, tmp_path: Path
) -> None:
    ns.env["ALKNET_QUEUE__PRODUCER__MESSAGE_DOCS"] = "10"
    report = enqueue(ns.settings(), str(write_jsonl(tmp_path / "in.jsonl", 25)), "j1")
    assert (report.read, report.sent, report.skipped, report.read_errors) == (25, 25, 0, 0)
    assert report.messages == 3
    messages = ns.client.lrange(f"{ns.prefix}screen", 0, -1)
    assert len(messages) == 3
    assert {json.loads(m)["content-type"] for m in messages} == {"application/json"}
    outbox = [json.loads(c) for c in ns.client.hvals(f"{ns.prefix}job:j1:chunks")]
    assert sorted(len(c["docs"]) for c in outbox) == [5, 10, 10]
    assert sorted(d["id"] for c in outbox for d in c["docs"]) == sorted(f"d{i}" for i in range(25))
    assert ns.client.zrange(f"{ns.prefix}jobs", 0, -1) == ["j1"]
    progress = JobBook(ResultStore.from_settings(ns.settings().queue)).progress("j1")
    assert progress is not None
    assert (progress.total, progress.done, progress.pending, progress.enqueue_finished) == (
        25,
        0,
        25,
        True,
    )


@pytest.mark.redis
def test_unreadable_records_become_error_rows(ns: Namespace, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        '{"id": "ok", "text": "fine"}\nnot json\n{"id": "long", "text": "' + "x" * 200 + '"}\n'
    )
    ns.env["ALKNET_LIMITS__MAX_CHARS"] = "100"
    report = enqueue(ns.settings(), str(source), "j2")
    assert (report.read, report.sent, report.read_errors) == (3, 1, 2)
    rows = list(JobBook(ResultStore.from_settings(ns.settings().queue)).rows("j2"))
    assert rows[0] is None  # "ok" is waiting for a worker
    assert rows[1] is not None and rows[1]["decision"] == "error"
    assert "not valid JSON" in rows[1]["error"]
    assert rows[2] is not None and "limits.max_chars is" in rows[2]["error"]


@pytest.mark.redis
def test_backpressure_holds_the_producer_until_the_queue_shrinks(
    ns: Namespace, tmp_path: Path
) -> None:
    ns.env["ALKNET_QUEUE__PRODUCER__MAX_QUEUE_LENGTH"] = "20"
    ns.env["ALKNET_QUEUE__PRODUCER__CHUNK_SIZE"] = "10"
    ns.env["ALKNET_QUEUE__PRODUCER__MESSAGE_DOCS"] = "1"
    ns.env["ALKNET_QUEUE__PRODUCER__BACKPRESSURE_POLL_S"] = "0.05"
    settings = ns.settings()
    source = str(write_jsonl(tmp_path / "in.jsonl", 100))
    reports = []
    thread = threading.Thread(target=lambda: reports.append(enqueue(settings, source, "bp")))
    thread.start()
    queue = f"{ns.prefix}screen"
    ns.wait_for(lambda: ns.client.llen(queue) >= 20, 10, "the queue to fill")
    time.sleep(0.5)
    assert thread.is_alive() and ns.client.llen(queue) <= 30  # held back, not flooding
    while thread.is_alive():  # play the worker: take messages off the queue
        ns.client.rpop(queue, 5)
        time.sleep(0.02)
    assert reports[0].sent == 100 and reports[0].waited_s > 0.4


def test_an_unreachable_broker_is_a_clear_error_after_retries(
    ns: Namespace, tmp_path: Path
) -> None:
    ns.env["ALKNET_QUEUE__BROKER_URL"] = "redis://127.0.0.1:1/0"
    ns.env["ALKNET_QUEUE__PRODUCER__CONNECT_RETRIES"] = "2"
    ns.env["ALKNET_QUEUE__PRODUCER__CONNECT_BACKOFF_S"] = "0.05"
    started = time.monotonic()
    with pytest.raises(QueueUnavailable, match=r"after 2 retries.*0 sent.*Run the same command"):
        enqueue(ns.settings(), str(write_jsonl(tmp_path / "in.jsonl", 5)), "down")
    assert time.monotonic() - started < 10


def test_the_cli_reports_an_unreachable_broker(
    ns: Namespace,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ns.env["ALKNET_QUEUE__BROKER_URL"] = "redis://127.0.0.1:1/0"
    ns.env["ALKNET_QUEUE__PRODUCER__CONNECT_RETRIES"] = "1"
    ns.env["ALKNET_QUEUE__PRODUCER__CONNECT_BACKOFF_S"] = "0.05"
    for key, value in ns.env.items():
        monkeypatch.setenv(key, value)
    args = argparse.Namespace(
        input=str(write_jsonl(tmp_path / "i.jsonl", 3)), job="x", format="auto"
    )
    assert cli.run_enqueue(args) == 1
    assert "Redis unreachable" in capsys.readouterr().err


@pytest.mark.redis
def test_a_bad_job_name_is_refused(ns: Namespace, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bad job name"):
        enqueue(ns.settings(), str(write_jsonl(tmp_path / "in.jsonl", 1)), "no spaces")
