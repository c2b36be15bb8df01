"""Prometheus metrics of one worker process, served on `[queue.worker].metrics_port`.

A worker is one process (threads pool), so plain prometheus_client metrics suffice: no
multiprocess mode. Several workers on one host need one port each (`--metrics-port`).
Names follow celery-exporter's habits (`_total` counters, seconds). The queue length is
read from Redis at scrape time: Flower's metrics do not have it, and an autoscaler
wants it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from alknet_firewall_worker.batching import BatchStats

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()

DOCUMENTS = Counter(
    "alknet_documents_total",
    "Documents finished, by outcome: screened, cached, error, gave_up (an error row after "
    "too many deliveries), duplicate (already had a row)",
    ["outcome"],
    registry=REGISTRY,
)
MESSAGES = Counter(
    "alknet_messages_total",
    "Messages (chunks of documents) handled, by outcome: stored (every row written), split "
    "(delivered before and never finished: sent back as two halves), superseded (a copy of "
    "a chunk already split: dropped, its halves carry its documents)",
    ["outcome"],
    registry=REGISTRY,
)
REDRIVEN = Counter(
    "alknet_redriven_chunks_total",
    "Chunks sent again by this worker's re-drive sweep (their message was lost)",
    registry=REGISTRY,
)
TOKENS = Counter(
    "alknet_tokens_screened_total",
    "Tokens run through the model, estimated from characters",
    registry=REGISTRY,
)
ERRORS = Counter(
    "alknet_errors_total",
    "Failures, by kind: model (a forward pass raised), gave_up (too many deliveries), "
    "store (Redis unreachable after retries: the message is requeued)",
    ["kind"],
    registry=REGISTRY,
)
BATCH_DOCUMENTS = Histogram(
    "alknet_batch_documents",
    "Documents per forward pass",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    registry=REGISTRY,
)
BATCH_TOKENS = Histogram(
    "alknet_batch_tokens",
    "Tokens per forward pass, estimated from characters",
    buckets=(64, 256, 1024, 4096, 16384, 65536),
    registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "alknet_batch_seconds",
    "Wall time of one forward pass",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)


def record_batch(stats: BatchStats) -> None:
    """Count one forward pass (the batcher's `on_batch` callback)."""
    if not stats.ok:
        ERRORS.labels("model").inc()
        return
    TOKENS.inc(stats.tokens)
    BATCH_DOCUMENTS.observe(stats.size)
    BATCH_TOKENS.observe(stats.tokens)
    BATCH_SECONDS.observe(stats.seconds)


class QueueLengthCollector(Collector):
    """`alknet_queue_length`: messages waiting in the broker, read when scraped."""

    def __init__(self, queue: str, length: Callable[[], int]) -> None:
        self._queue = queue
        self._length = length

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "alknet_queue_length", "Messages waiting in the broker queue", labels=["queue"]
        )
        try:
            gauge.add_metric([self._queue], float(self._length()))
        except Exception:  # a scrape must not fail because Redis is away
            log.warning("cannot read the length of queue %s", self._queue, exc_info=True)
            gauge.add_metric([self._queue], float("nan"))
        yield gauge


def serve(port: int, queue: str, length: Callable[[], int]) -> None:
    """Start the /metrics endpoint (a daemon thread) on `port`; 0 means no endpoint."""
    if port == 0:
        return
    try:
        start_http_server(port, registry=REGISTRY)
    except OSError as exc:
        # Typically a second worker process on the same host. Screening matters more than
        # its metrics: keep going, and say loudly how to give each process its own port.
        log.error(
            "no metrics endpoint: cannot listen on port %d (%s); give each worker process "
            "on this host its own --metrics-port (or ALKNET_QUEUE__WORKER__METRICS_PORT), "
            "or 0 for none",
            port,
            exc.strerror or exc,
        )
        return
    REGISTRY.register(QueueLengthCollector(queue, length))
    log.info("Prometheus metrics on :%d/metrics", port)
