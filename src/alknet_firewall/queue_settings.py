"""Settings of the queue side (broker, results, batching worker): the [queue] table.

Placeholder owned by the queue work; config.py only imports QueueSettings from here.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class QueueSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    broker_url: str = "redis://127.0.0.1:6379/0"
    result_url: str = "redis://127.0.0.1:6379/0"
