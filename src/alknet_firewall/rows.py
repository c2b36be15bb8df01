"""The output row of one input record, the same for `screen`, the queue and `results`.

Every row has the verdict's fields (decision, score, alarms, codebook_version, tokens,
windows, error), whether the record was screened, refused or could not be read at all;
the input's other fields follow.
"""

from __future__ import annotations

from typing import Any

from alknet_firewall.schema import Verdict
from alknet_firewall.sources import UnreadableRecord


def result_row(doc_id: str | None, meta: dict[str, Any], verdict: Verdict) -> dict[str, Any]:
    """id, the verdict's fields, then the input's other fields passed through.

    Verdict fields win over a meta key of the same name: a row must never carry a
    decision or score that the firewall did not give.
    """
    fields = verdict.model_dump(mode="json")
    passed = {k: v for k, v in meta.items() if k not in fields and k != "id"}
    return {"id": doc_id, **fields, **passed}


def unreadable_row(err: UnreadableRecord, codebook_version: str | None) -> dict[str, Any]:
    """The row of an input record that never became a document: an error verdict, and
    where the record was (`line`, `location`). `codebook_version` is None when the
    producer does not know it yet (no worker has started)."""
    verdict = Verdict.failed(err.reason, codebook_version or "")
    row = result_row(err.id, {"line": err.line, "location": err.location}, verdict)
    return row | {"codebook_version": codebook_version}


def is_error_row(row: dict[str, Any]) -> bool:
    """Whether a stored row says its document could not be screened."""
    return row.get("decision") == "error"
