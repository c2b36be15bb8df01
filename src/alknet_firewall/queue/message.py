"""The messages on the queue: screen these documents of this job.

Producer and worker share this module and nothing else of each other. A message carries a
chunk of one job's documents (`ScreenChunk`, task `alknet.screen_chunk`), bounded by a
count and by characters ([queue.producer] message_docs, message_chars), so that Celery,
Kombu and Redis cost a few round trips per chunk instead of per document. On the wire it
is Celery's JSON kwargs `{job, id, docs: [{id, text, meta}], suspect}`; in code the typed
model, validated when it arrives.

The one-document message of before 2026-11 (`ScreenMessage`, task `alknet.screen`, kwargs
`{job, doc_id, text, meta}`) is still served, so messages queued by an older producer
are screened after an upgrade.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from alknet_firewall.schema import Document

TASK_NAME = "alknet.screen"  # one document per message: older producers
CHUNK_TASK_NAME = "alknet.screen_chunk"
# Namespace of task ids: the same chunk of the same job always gets the same id.
_TASK_IDS = uuid.UUID("6f1d1c0e-5a7b-4c55-9a59-0d6b1f4d2e11")


class ScreenChunk(BaseModel):
    """Screen `docs` and store their rows in `job`'s results.

    `id` names the message for its count of forward passes begun (a suspect after one
    that never ended) and in the job's outbox of chunks not yet stored (keys.py); a half
    split off a chunk is named `{id}.0` or `{id}.1`.
    `suspect`: split from a chunk whose worker died or hung on it, so it is screened
    in batches of its own, never beside other messages' documents.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    job: str
    id: str
    docs: list[Document] = Field(min_length=1)
    suspect: bool = False

    @classmethod
    def new(cls, job: str, docs: list[Document]) -> ScreenChunk:
        """A chunk under a fresh id: a re-run of `enqueue` never shares a count of passes
        begun with the messages of an earlier run."""
        return cls(job=job, id=uuid.uuid4().hex[:16], docs=docs)

    def halves(self, docs: list[Document]) -> list[ScreenChunk]:
        """`docs` (the chunk's documents still without a row) split in two suspect halves."""
        mid = (len(docs) + 1) // 2
        parts = [docs[:mid], docs[mid:]]
        return [
            ScreenChunk(job=self.job, id=f"{self.id}.{i}", docs=part, suspect=True)
            for i, part in enumerate(parts)
            if part
        ]

    @property
    def task_id(self) -> str:
        """The same id for every send of this chunk: Flower shows a re-drive as a resend."""
        return str(uuid.uuid5(_TASK_IDS, f"{self.job}\n{self.id}"))

    def kwargs(self) -> dict[str, Any]:
        """The Celery task's keyword arguments (the wire layout)."""
        return self.model_dump(mode="json")


def pack(
    job: str, docs: Iterable[Document], max_docs: int, max_chars: int
) -> Iterator[ScreenChunk]:
    """Consecutive documents in chunks of at most `max_docs` documents and `max_chars`
    characters; a document longer than `max_chars` travels alone."""
    part: list[Document] = []
    chars = 0
    for doc in docs:
        if part and (len(part) == max_docs or chars + len(doc.text) > max_chars):
            yield ScreenChunk.new(job, part)
            part, chars = [], 0
        part.append(doc)
        chars += len(doc.text)
    if part:
        yield ScreenChunk.new(job, part)


class ScreenMessage(BaseModel):
    """The one-document message of before 2026-11: still read, no longer sent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    job: str
    doc_id: str
    text: str
    meta: dict[str, Any] = Field(default_factory=dict)

    def chunk(self, field: str) -> ScreenChunk:
        """The same work as a chunk of one, named by the document's result field (every
        redelivery of the message gets the same name, hence one count of passes begun)."""
        doc = Document(id=self.doc_id, text=self.text, meta=self.meta)
        return ScreenChunk(job=self.job, id=field, docs=[doc])
