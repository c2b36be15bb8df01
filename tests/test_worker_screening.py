"""A worker's per-delivery logic on the in-memory store: no Redis, no subprocess, milliseconds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alknet_firewall_worker.batching import MicroBatcher
from alknet_firewall_worker.screening import Outcome, Screening

from alknet_firewall.errors import ScreeningError
from alknet_firewall.queue.keys import JobField, result_field
from alknet_firewall.queue.memory import MemoryStore
from alknet_firewall.queue.settings import WorkerSettings
from alknet_firewall.rows import result_row
from alknet_firewall.schema import Document, Verdict
from tests.queue_helpers import FakeScreener, fake_verdict

DOC = Document(id="d1", text="a plain sentence", meta={"lang": "en"})
FIELD = result_field(DOC.id, DOC.digest)


@pytest.fixture
def screener() -> FakeScreener:
    return FakeScreener()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def screening(screener: FakeScreener, store: MemoryStore) -> Iterator[Screening]:
    batcher = MicroBatcher(
        screener.screen_batch,
        token_budget=1000,
        max_docs=4,
        max_wait_s=0.0,
        time_limit_s=60,
        on_batch=lambda _stats: None,
        on_overrun=lambda _seconds: None,
    )
    limits = WorkerSettings(max_deliveries=2, store_retries=0)
    yield Screening(store, screener, batcher, limits)
    batcher.close()


def test_a_document_is_screened_stored_and_cached(screening: Screening, store: MemoryStore) -> None:
    assert screening.handle("j", DOC, may_retry=True) is Outcome.SCREENED
    assert store.rows[("j", FIELD)] == result_row(DOC.id, DOC.meta, fake_verdict(DOC.text))
    assert store.cached_verdict(FakeScreener.codebook_version, DOC.digest) is not None
    assert store.counters["j"][JobField.DONE] == 1 and ("j", FIELD) not in store.deliveries


def test_a_redelivery_after_the_row_is_a_duplicate(
    screening: Screening, screener: FakeScreener
) -> None:
    screening.handle("j", DOC, may_retry=True)
    assert screening.handle("j", DOC, may_retry=True) is Outcome.DUPLICATE
    assert screener.batches == [1]


def test_another_job_gets_the_cached_verdict_without_the_model(
    screening: Screening, screener: FakeScreener, store: MemoryStore
) -> None:
    screening.handle("j", DOC, may_retry=True)
    assert screening.handle("k", DOC, may_retry=True) is Outcome.CACHED
    assert screener.batches == [1]
    assert store.rows[("k", FIELD)] == store.rows[("j", FIELD)]


def test_too_many_deliveries_give_an_error_row_not_a_loop(
    screening: Screening, screener: FakeScreener, store: MemoryStore
) -> None:
    for _ in range(2):  # two deliveries whose worker died before storing anything
        store.begin("j", FIELD)
    assert screening.handle("j", DOC, may_retry=True) is Outcome.GAVE_UP
    row = store.rows[("j", FIELD)]
    assert row["decision"] == "error" and row["error"].startswith("gave up after 2 deliveries")
    assert screener.batches == [] and store.counters["j"][JobField.ERRORS] == 1


def test_a_forgiven_delivery_does_not_count(screening: Screening, store: MemoryStore) -> None:
    for _ in range(2):
        store.begin("j", FIELD)
    store.forgive([("j", FIELD), ("j", FIELD)])
    assert screening.handle("j", DOC, may_retry=True) is Outcome.SCREENED


def test_a_model_error_is_retried_then_stored_and_never_cached(
    screening: Screening, store: MemoryStore
) -> None:
    poison = Document(id="p", text="a POISON pill")
    with pytest.raises(ScreeningError, match="model error"):
        screening.handle("j", poison, may_retry=True)
    assert store.rows == {}
    assert screening.handle("j", poison, may_retry=False) is Outcome.ERROR
    (row,) = store.rows.values()
    assert row["decision"] == "error" and "POISON" in row["error"]
    assert store.cache == {}


@pytest.mark.redis
def test_the_memory_store_answers_like_the_redis_store() -> None:
    from alknet_firewall.queue.store import ResultStore
    from tests.queue_helpers import namespace

    verdict = fake_verdict(DOC.text)
    failed = Verdict.failed("bad", verdict.codebook_version)
    answers = []
    with namespace() as ns:
        for store in (MemoryStore(), ResultStore.from_settings(ns.settings().queue)):
            answers.append(
                [
                    store.begin("j", "f"),
                    store.begin("j", "f"),
                    store.forgive([("j", "f")]),
                    store.begin("j", "f"),
                    store.put_row("j", "f", {"id": "a"}),
                    store.put_row("j", "f", {"id": "b"}),
                    store.begin("j", "f"),
                    store.put_row("j", "g", result_row("g", {}, failed)),
                    store.cache_verdict(DOC.digest, verdict),
                    store.cache_verdict("other", failed),
                    store.cached_verdict(verdict.codebook_version, DOC.digest),
                    store.cached_verdict(verdict.codebook_version, "other"),
                ]
            )
    memory, redis = answers
    assert memory == redis
    assert memory[:2] == [(False, 1), (False, 2)] and memory[4:6] == [True, False]
