"""The Celery tasks: one message per chunk of documents; requeues around `screening`.

Acks are late (app config): the message is acked when the task returns, after every row
of its chunk is stored (or after its halves are sent, when it was split). Redis errors
that outlast the in-task retries requeue the message (`Reject(requeue=True)`): nothing is
lost, and the rows already stored make the next delivery cheap. `alknet.screen`, the
one-document message of older producers, is served as a chunk of one.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.exceptions import Reject
from kombu.exceptions import OperationalError

from alknet_firewall.queue.connection import TRANSIENT_ERRORS
from alknet_firewall.queue.keys import result_field
from alknet_firewall.queue.message import CHUNK_TASK_NAME, TASK_NAME, ScreenChunk, ScreenMessage
from alknet_firewall.schema import text_digest
from alknet_firewall_worker import metrics, runtime
from alknet_firewall_worker.screening import ChunkReport, Outcome

# Redis away (the store), or the broker refusing a split's halves: requeue, never drop.
_REQUEUE: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, OperationalError)


@shared_task(name=CHUNK_TASK_NAME)  # type: ignore[untyped-decorator]  # Celery: no hints
def screen_chunk(**kwargs: Any) -> str:
    """Screen one chunk of a job and store its rows; returns how its documents ended."""
    return _handle(ScreenChunk.model_validate(kwargs))


@shared_task(name=TASK_NAME)  # type: ignore[untyped-decorator]
def screen(**kwargs: Any) -> str:
    """A one-document message from a producer of before 2026-11."""
    message = ScreenMessage.model_validate(kwargs)
    return _handle(message.chunk(result_field(message.doc_id, text_digest(message.text))))


def _handle(chunk: ScreenChunk) -> str:
    try:
        report = runtime.current().screening.handle(chunk)
    except _REQUEUE as exc:
        metrics.ERRORS.labels("store").inc()
        raise Reject(exc, requeue=True) from exc
    _count(report)
    if report.split or report.superseded:
        return report.fate
    return " ".join(f"{outcome.value}={n}" for outcome, n in report.outcomes.items() if n)


def _count(report: ChunkReport) -> None:
    metrics.MESSAGES.labels(report.fate).inc()
    for outcome, n in report.outcomes.items():
        if n:
            metrics.DOCUMENTS.labels(outcome.value).inc(n)
    if report.outcomes[Outcome.GAVE_UP]:
        metrics.ERRORS.labels("gave_up").inc(report.outcomes[Outcome.GAVE_UP])
