"""`alknet-firewall results NAME --out FILE`: one row per document, JSONL or CSV.

Rows come out in input order, streamed from Redis in chunks. A CSV needs its header
first, so the rows are read twice: once for the union of their fields, once to write.
Nested values (alarms, meta objects) become JSON text in CSV cells.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alknet_firewall.queue.jobs import JobBook

# The screen command's leading columns; other fields follow in first-seen order.
LEADING = ("id", "decision", "score", "alarms", "codebook_version", "error")


@dataclass(frozen=True, slots=True)
class ExportReport:
    written: int
    pending: int  # documents without a row yet: not written


def export(book: JobBook, job: str, out: Path) -> ExportReport:
    """Write the job's rows to `out` (.csv for CSV, anything else JSONL)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        return _write_csv(book, job, out)
    return _write_jsonl(book, job, out)


class _DoneRows:
    """The job's stored rows in input order, counting the documents still pending."""

    def __init__(self, book: JobBook, job: str) -> None:
        self.book, self.job, self.pending = book, job, 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for row in self.book.rows(self.job):
            if row is None:
                self.pending += 1
            else:
                yield row


def _write_jsonl(book: JobBook, job: str, out: Path) -> ExportReport:
    rows, written = _DoneRows(book, job), 0
    with out.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            written += 1
    return ExportReport(written, rows.pending)


def _write_csv(book: JobBook, job: str, out: Path) -> ExportReport:
    columns = dict.fromkeys(LEADING)
    for row in _DoneRows(book, job):
        columns.update(dict.fromkeys(row))
    rows, written = _DoneRows(book, job), 0
    with out.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})
            written += 1
    return ExportReport(written, rows.pending)


def _cell(value: Any) -> Any:
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return "" if value is None else value
