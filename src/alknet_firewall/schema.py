"""The records that cross every boundary: documents in, verdicts out.

Everything here is plain pydantic and JSON-serialisable, so the same objects travel over
the queue, land in the results backend and are written by the CLI.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Decision(StrEnum):
    """What the caller should do with the text."""

    ALLOW = "allow"
    FLAG = "flag"
    BLOCK = "block"
    ERROR = "error"  # the text could not be screened; `error` says why


class Document(BaseModel):
    """One untrusted text to screen. `meta` carries the input's other fields through."""

    model_config = ConfigDict(frozen=True)

    id: str
    text: str
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def digest(self) -> str:
        """Content digest: same text, same digest, whatever the id."""
        return text_digest(self.text)


class Alarm(BaseModel):
    """One signal that fired, and where: the character span of its worst window."""

    signal: str
    strength: float = Field(ge=0.0, le=1.0)
    start: int = Field(ge=0)
    end: int = Field(ge=0)


class Verdict(BaseModel):
    """The firewall's answer for one text."""

    decision: Decision
    score: float = Field(ge=0.0, le=1.0)
    alarms: list[Alarm] = Field(default_factory=list)
    codebook_version: str
    tokens: int = 0
    windows: int = 0
    error: str | None = None

    @classmethod
    def failed(cls, reason: str, codebook_version: str) -> Verdict:
        """An error verdict: the text was not screened, and `reason` says why."""
        return cls(
            decision=Decision.ERROR, score=0.0, codebook_version=codebook_version, error=reason
        )


def text_digest(text: str) -> str:
    """sha256 of the UTF-8 text, hex. Keys caches and idempotent result writes."""
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()
