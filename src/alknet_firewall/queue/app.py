"""The Celery app, built from settings: JSON only, late acks, Redis transport options.

Importing this module loads Celery and Kombu but never torch: the producer sends through
the same app. The worker passes its task module in `include`
(`alknet_firewall_worker.tasks`, with the model, batcher and task body); this module
names no worker code, so the producer's app never loads it.
"""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery

from alknet_firewall.config import Settings
from alknet_firewall.queue.broker import ssl_options, transport_options
from alknet_firewall.queue.message import CHUNK_TASK_NAME, TASK_NAME, ScreenChunk


class FirewallApp(Celery):  # type: ignore[misc]  # Celery ships no type hints
    """A Celery app that carries the settings it was built from."""

    def __init__(self, settings: Settings, include: Sequence[str] = ()) -> None:
        queue = settings.queue
        super().__init__("alknet_firewall", broker=queue.broker_url, include=list(include))
        self.settings = settings
        self.conf.update(
            broker_transport_options=transport_options(queue),
            broker_connection_retry_on_startup=True,
            # rediss://: verify the server's certificate (Kombu alone would not).
            broker_use_ssl=ssl_options(queue.broker_url),
            # No pickle anywhere: a message in any other format is refused unread.
            task_serializer="json",
            accept_content=["json"],
            event_serializer="json",
            result_serializer="json",
            result_accept_content=["json"],
            # Verdicts go to our own store (queue.store), keyed for idempotency; Celery's
            # result backend would only be a second, unkeyed copy.
            task_ignore_result=True,
            # Ack after the verdict is stored: a worker that dies mid-batch loses nothing.
            task_acks_late=True,
            # Only matters for a prefork child; our pools have none, but a worker started
            # by hand with --pool prefork must still requeue rather than drop.
            task_reject_on_worker_lost=True,
            task_default_queue=queue.queue,
            task_routes={name: {"queue": queue.queue} for name in (TASK_NAME, CHUNK_TASK_NAME)},
            worker_pool=queue.worker.pool,
            worker_concurrency=queue.worker.concurrency,
            worker_prefetch_multiplier=queue.worker.prefetch_multiplier,
            worker_send_task_events=queue.worker.task_events,
        )

    def send_chunks(self, chunks: Sequence[ScreenChunk], *, retry: bool = True) -> None:
        """Publish `chunks` in one pipeline (Kombu's publish batch): the producer's
        messages, a split chunk's halves, a re-drive. `retry=False` leaves retrying to
        the caller (the producer retries a whole chunk of input)."""
        if not chunks:
            return
        with self.producer_or_acquire() as producer, producer.batch(max_size=len(chunks)):
            for chunk in chunks:
                self.send_task(
                    CHUNK_TASK_NAME,
                    kwargs=chunk.kwargs(),
                    task_id=chunk.task_id,
                    queue=self.settings.queue.queue,
                    producer=producer,
                    retry=retry,
                )


def create_app(settings: Settings, include: Sequence[str] = ()) -> FirewallApp:
    """The Celery app for these settings; a worker names its task modules in `include`."""
    return FirewallApp(settings, include)
