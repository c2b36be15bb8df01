"""Settings of the queue side (broker, results, batching worker, producer): the [queue] table.

config.py only imports `QueueSettings` from here. Every default is explained next to the
same key in config.toml; the comments here say what the key is for.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Table(BaseModel):
    """A config.toml table: unknown keys are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


class WorkerSettings(_Table):
    """[queue.worker]: one worker process (`alknet-firewall worker`, `celery -A worker`)."""

    # threads: documents wait in threads of one process so a batch can form (the default);
    # solo: one document at a time, no batching (debugging, comparisons).
    pool: Literal["threads", "solo"] = "threads"
    concurrency: int = Field(default=64, ge=1, le=4096)  # documents in flight per process
    prefetch_multiplier: int = Field(default=1, ge=1, le=64)
    metrics_port: int = Field(default=9808, ge=0, le=65535)  # 0: no metrics endpoint
    batch_time_limit_s: float = Field(default=300.0, gt=0)  # a longer forward pass is a hang
    max_deliveries: int = Field(default=5, ge=1)  # then an error verdict, never a loop
    model_retries: int = Field(default=2, ge=0)  # retries of a document the model raised on
    store_retries: int = Field(default=5, ge=0)  # in-task retries of a Redis write
    retry_backoff_s: float = Field(default=1.0, gt=0)  # first delay; doubles per attempt
    retry_backoff_max_s: float = Field(default=30.0, gt=0)
    task_events: bool = True  # Flower's task views need them


class MicroBatchSettings(_Table):
    """[queue.batch]: when the micro-batcher closes a batch."""

    token_budget: int = Field(default=16384, ge=64)
    max_wait_ms: int = Field(default=50, ge=0, le=60_000)


class ResultSettings(_Table):
    """[queue.results]: how long job results and the shared verdict cache live."""

    ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    cache_ttl_s: int = Field(default=30 * 24 * 3600, ge=60)


class ProducerSettings(_Table):
    """[queue.producer]: `alknet-firewall enqueue`."""

    chunk_size: int = Field(default=500, ge=1, le=100_000)
    max_queue_length: int = Field(default=20_000, ge=1)
    backpressure_poll_s: float = Field(default=0.5, gt=0)
    connect_retries: int = Field(default=5, ge=0)
    connect_backoff_s: float = Field(default=1.0, gt=0)


class QueueSettings(_Table):
    """[queue]: where the broker and the results live, and the tables above."""

    broker_url: str = "redis://127.0.0.1:6379/0"
    result_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = Field(default="alknet:", pattern=r"^[A-Za-z0-9_.:{}-]*$")
    queue: str = Field(default="screen", pattern=r"^[A-Za-z0-9_.-]+$")
    visibility_timeout_s: int = Field(default=3600, ge=2)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    batch: MicroBatchSettings = Field(default_factory=MicroBatchSettings)
    results: ResultSettings = Field(default_factory=ResultSettings)
    producer: ProducerSettings = Field(default_factory=ProducerSettings)

    @model_validator(mode="after")
    def _visibility_outlasts_work(self) -> QueueSettings:
        # A message reserved longer than the visibility timeout is delivered a second
        # time while the first delivery is still being worked on: wasted work, and a
        # delivery counted against the document. Two whole batches must fit.
        w = self.worker
        longest = 2 * w.batch_time_limit_s + self.batch.max_wait_ms / 1000 + w.retry_backoff_max_s
        if self.visibility_timeout_s <= longest:
            raise ValueError(
                f"visibility_timeout_s ({self.visibility_timeout_s}) must exceed "
                f"2 x worker.batch_time_limit_s + batch.max_wait_ms + "
                f"worker.retry_backoff_max_s ({longest:.1f} s)"
            )
        return self
