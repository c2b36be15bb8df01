"""The output row of one screened document, the same for `screen`, the queue and `results`."""

from __future__ import annotations

from typing import Any

from alknet_firewall.schema import Verdict


def result_row(doc_id: str, meta: dict[str, Any], verdict: Verdict) -> dict[str, Any]:
    """id, the verdict's fields, then the input's other fields passed through.

    Verdict fields win over a meta key of the same name: a row must never carry a
    decision or score that the firewall did not give.
    """
    fields = verdict.model_dump(mode="json")
    passed = {k: v for k, v in meta.items() if k not in fields and k != "id"}
    return {"id": doc_id, **fields, **passed}


def is_error_row(row: dict[str, Any]) -> bool:
    """Whether a stored row says its document could not be screened."""
    return row.get("decision") == "error"
