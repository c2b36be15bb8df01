"""The Celery task: one message per document; retries and requeues around `screening`.

Acks are late (app config): the message is acked when this function returns, after the
row is stored. A model error on the document alone is retried with backoff (a new
message, after `countdown`), then stored as an error verdict. Redis errors that
outlast the in-task retries requeue the message (`Reject(requeue=True)`): the document
is not lost, and it costs no retry budget since nothing is wrong with it.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task
from celery.exceptions import Reject

from alknet_firewall.errors import ScreeningError
from alknet_firewall.queue.connection import TRANSIENT_ERRORS, backoff_s
from alknet_firewall.queue.message import TASK_NAME, ScreenMessage
from alknet_firewall_worker import metrics, runtime
from alknet_firewall_worker.screening import Outcome


@shared_task(bind=True, name=TASK_NAME)  # type: ignore[untyped-decorator]  # Celery: no hints
def screen(task: Task, **kwargs: Any) -> str:
    """Screen one document and store its row in its job; returns how it ended."""
    message = ScreenMessage.model_validate(kwargs)
    rt = runtime.current()
    limits = rt.settings.queue.worker
    retries = int(task.request.retries)
    may_retry = retries < limits.model_retries
    try:
        outcome = rt.screening.handle(message.job, message.document, may_retry=may_retry)
    except ScreeningError as exc:
        delay = backoff_s(retries, limits.retry_backoff_s, limits.retry_backoff_max_s)
        raise task.retry(exc=exc, countdown=delay, max_retries=limits.model_retries) from exc
    except TRANSIENT_ERRORS as exc:
        metrics.ERRORS.labels("store").inc()
        raise Reject(exc, requeue=True) from exc
    if outcome is Outcome.GAVE_UP:
        metrics.ERRORS.labels("gave_up").inc()
    metrics.DOCUMENTS.labels(outcome.value).inc()
    return outcome.value
