"""Settings of the queue side (broker, results, batching worker, producer): the [queue] table.

config.py only imports `QueueSettings` from here. Every default is explained next to the
same key in config.toml; the comments here say what the key is for.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

from pydantic import Field, model_validator

from alknet_firewall.section import Section


class WorkerSettings(Section):
    """[queue.worker]: one worker process (`alknet-firewall worker`,
    `celery -A alknet_firewall_worker worker`)."""

    # threads: documents wait in threads of one process so a batch can form (the default);
    # solo: one document at a time, no batching (debugging, comparisons).
    pool: Literal["threads", "solo"] = "threads"
    concurrency: int = Field(default=8, ge=1, le=4096)  # messages (chunks) in flight per process
    prefetch_multiplier: int = Field(default=1, ge=1, le=64)
    metrics_port: int = Field(default=9808, ge=0, le=65535)  # 0: no metrics endpoint
    batch_time_limit_s: float = Field(default=300.0, gt=0)  # a longer forward pass is a hang
    # Forward passes that died (worker killed or hung) on a one-document message before its
    # error verdict; a chunk of several is split in halves instead. No DLQ in Redis.
    max_deliveries: int = Field(default=5, ge=1)
    # A job with messages outstanding and no row stored for this long, while the queue is
    # empty, has lost a message: its unscreened chunks are sent again (re-drive).
    redrive_after_s: float = Field(default=120.0, gt=0)
    model_retries: int = Field(default=2, ge=0)  # retries of a document the model raised on
    store_retries: int = Field(default=5, ge=0)  # in-task retries of a Redis write
    retry_backoff_s: float = Field(default=1.0, gt=0)  # first delay; doubles per attempt
    retry_backoff_max_s: float = Field(default=30.0, gt=0)
    task_events: bool = True  # Flower's task views need them


# The micro-batcher budgets documents by characters, so a text is tokenised once (by the
# model) rather than once to plan a batch and again to run it; about four characters
# make one SmolLM2 token in English prose.
CHARS_PER_TOKEN = 4


class MicroBatchSettings(Section):
    """[queue.batch]: when the micro-batcher closes a batch."""

    # Text tokens of the documents in one micro-batch, estimated from their characters
    # (CHARS_PER_TOKEN). Not [batching] token_budget: that caps the padded window tokens
    # of one forward pass.
    document_tokens: int = Field(default=16384, ge=64)
    max_wait_ms: int = Field(default=50, ge=0, le=60_000)

    @model_validator(mode="before")
    @classmethod
    def _old_name(cls, values: Any) -> Any:
        # Until 2026-11 this key was `token_budget`, the same name as [batching]'s, which
        # counts something else. The old name still works, with a warning.
        if not isinstance(values, dict) or "token_budget" not in values:
            return values
        if "document_tokens" in values:
            raise ValueError("token_budget is the old name of document_tokens: set only the latter")
        warnings.warn(
            "[queue.batch] token_budget (ALKNET_QUEUE__BATCH__TOKEN_BUDGET) is renamed "
            "document_tokens (ALKNET_QUEUE__BATCH__DOCUMENT_TOKENS)",
            FutureWarning,
            stacklevel=2,
        )
        renamed = {k: v for k, v in values.items() if k != "token_budget"}
        return renamed | {"document_tokens": values["token_budget"]}


class ResultSettings(Section):
    """[queue.results]: how long job results and the shared verdict cache live."""

    ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    cache_ttl_s: int = Field(default=30 * 24 * 3600, ge=60)


class ProducerSettings(Section):
    """[queue.producer]: `alknet-firewall enqueue`."""

    chunk_size: int = Field(default=500, ge=1, le=100_000)  # records per pipelined round trip
    # One message carries up to this many documents of one job, and up to this many
    # characters (a longer document travels alone).
    message_docs: int = Field(default=64, ge=1, le=10_000)
    message_chars: int = Field(default=262_144, ge=1)
    max_queue_length: int = Field(default=1_000, ge=1)  # messages, not documents
    backpressure_poll_s: float = Field(default=0.5, gt=0)
    connect_retries: int = Field(default=5, ge=0)
    connect_backoff_s: float = Field(default=1.0, gt=0)


class QueueSettings(Section):
    """[queue]: where the broker and the results live, and the tables above."""

    broker_url: str = "redis://127.0.0.1:6379/0"
    result_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = Field(default="alknet:", pattern=r"^[A-Za-z0-9_.:{}-]*$")
    queue: str = Field(default="screen", pattern=r"^[A-Za-z0-9_.-]+$")
    visibility_timeout_s: int = Field(default=60, ge=2)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    batch: MicroBatchSettings = Field(default_factory=MicroBatchSettings)
    results: ResultSettings = Field(default_factory=ResultSettings)
    producer: ProducerSettings = Field(default_factory=ProducerSettings)

    @property
    def heartbeat_s(self) -> float:
        """How often a worker marks the messages it holds as alive (see
        alknet_firewall_worker.heartbeat): six beats per visibility timeout, so that a
        live worker's message is never taken for a dead one's even if a few beats are late."""
        return self.visibility_timeout_s / 6
