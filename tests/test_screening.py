"""The screening service without a model or Redis: rows, validation, cache, isolation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alknet_firewall.codebook import CodebookMeta
from alknet_firewall.codebook_settings import fitted_settings
from alknet_firewall.config import Settings
from alknet_firewall.errors import ScreeningError
from alknet_firewall.rows import result_row, unreadable_row
from alknet_firewall.schema import Document, Verdict
from alknet_firewall.screening import ScreeningService, screen_isolating
from alknet_firewall.sources import UnreadableRecord, read_records
from alknet_firewall.validation import text_problem
from tests.queue_helpers import FakeScreener, fake_verdict


class DictCache:
    """An in-memory verdict cache with the Redis store's interface."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], Verdict] = {}

    def cached_verdict(self, codebook_version: str, digest: str) -> Verdict | None:
        return self.entries.get((codebook_version, digest))

    def cache_verdict(self, digest: str, verdict: Verdict) -> None:
        self.entries[(verdict.codebook_version, digest)] = verdict


def test_isolation_gives_only_the_culprit_an_error() -> None:
    screener = FakeScreener()
    texts = [f"fine {i}" for i in range(16)]
    texts[11] = "a POISON pill"
    results = screen_isolating(screener.screen_batch, texts)
    assert isinstance(results[11], ScreeningError) and "POISON" in str(results[11])
    assert [r for i, r in enumerate(results) if i != 11] == [
        fake_verdict(t) for i, t in enumerate(texts) if i != 11
    ]
    # halving: 1 + 2 per level below the top for one culprit, not one pass per document
    assert len(screener.batches) <= 1 + 2 * 4 and sum(screener.batches) < 16 * 4


def test_a_wrong_number_of_verdicts_counts_as_a_failure() -> None:
    def short(texts: Sequence[str]) -> list[Verdict]:
        return [fake_verdict(t) for t in texts][:1]

    assert screen_isolating(short, ["one", "two"]) == [fake_verdict("one"), fake_verdict("two")]


def test_error_rows_have_every_field_of_a_verdict_row() -> None:
    verdict_row = result_row("a", {}, fake_verdict("x"))
    error_row = unreadable_row(UnreadableRecord("in.jsonl", 3, "b", "not valid JSON"), "cb-1")
    assert set(verdict_row) <= set(error_row)
    assert error_row["decision"] == "error" and error_row["error"] == "not valid JSON"
    assert (error_row["score"], error_row["alarms"], error_row["tokens"]) == (0.0, [], 0)
    assert (error_row["line"], error_row["location"]) == (3, "in.jsonl")
    assert unreadable_row(UnreadableRecord("-", 1, None, "x"), None)["codebook_version"] is None


def test_one_wording_for_the_length_limit(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "a", "text": "' + "x" * 12 + '"}\n')
    (record,) = read_records(path, max_chars=10)
    assert isinstance(record, UnreadableRecord)
    assert (
        record.reason
        == text_problem("x" * 12, 10)
        == "text has 12 characters; limits.max_chars is 10"
    )
    assert Settings().limits.max_chars == 1_000_000


def test_the_service_keeps_order_isolates_failures_and_uses_the_cache() -> None:
    screener, cache = FakeScreener(), DictCache()
    service = ScreeningService(screener, cache)
    records = [
        Document(id="a", text="first text", meta={"lang": "en"}),
        UnreadableRecord("in.jsonl", 2, None, "not valid JSON"),
        Document(id="c", text="a POISON pill"),
        Document(id="d", text="second text"),
    ]
    rows = service.rows(records)
    assert [r["id"] for r in rows] == ["a", None, "c", "d"]
    assert rows[0] == result_row("a", {"lang": "en"}, fake_verdict("first text"))
    assert rows[1]["decision"] == rows[2]["decision"] == "error"
    assert rows[2]["error"].startswith("model error: RuntimeError")
    assert len(cache.entries) == 2  # the model error is not remembered
    screener.batches.clear()
    assert service.rows(records) == rows
    assert screener.batches == [1]  # only the failed document went to the model again


def test_the_codebooks_layers_windows_pooling_and_framing_win() -> None:
    meta = CodebookMeta.model_construct(
        layers=[2, 3], window_size=16, window_stride=8, pooling="max", framed=False
    )
    settings = Settings()
    fitted = fitted_settings(settings, meta)
    assert fitted.model.layers == [2, 3]
    assert (fitted.windows.size, fitted.windows.stride, fitted.windows.pooling) == (16, 8, "max")
    assert fitted.windows.framed is False
    assert settings.model.layers == [4, 8, 12, 16, 20] and settings.windows.pooling == "mean"
    assert settings.windows.framed is True
    assert fitted_settings(fitted, meta) is fitted
