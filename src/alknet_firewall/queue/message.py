"""The one message on the queue: screen this document of this job.

Producer and worker share this module and nothing else of each other. On the wire the
message is Celery's JSON kwargs `{job, doc_id, text, meta}` (the layout queued messages
have always had, so messages already in Redis stay readable); in code it is the typed
`ScreenMessage`, validated when it arrives.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from alknet_firewall.schema import Document

TASK_NAME = "alknet.screen"
# Namespace of task ids: the same document of the same job always gets the same id.
_TASK_IDS = uuid.UUID("6f1d1c0e-5a7b-4c55-9a59-0d6b1f4d2e11")


class ScreenMessage(BaseModel):
    """Screen `document` and store its row in `job`'s results."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    job: str
    doc_id: str
    text: str
    meta: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, job: str, document: Document) -> ScreenMessage:
        return cls(job=job, doc_id=document.id, text=document.text, meta=document.meta)

    @property
    def document(self) -> Document:
        return Document(id=self.doc_id, text=self.text, meta=self.meta)

    def kwargs(self) -> dict[str, Any]:
        """The Celery task's keyword arguments (the wire layout)."""
        return self.model_dump()


def task_id(job: str, field: str) -> str:
    """The same id for the same document of the same job: Flower shows resends as one."""
    return str(uuid.uuid5(_TASK_IDS, f"{job}\n{field}"))
