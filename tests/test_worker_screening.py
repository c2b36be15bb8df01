"""A worker's per-chunk logic on the in-memory store: no Redis, no subprocess, milliseconds."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from alknet_firewall.queue.keys import JobField, result_field
from alknet_firewall.queue.memory import MemoryStore
from alknet_firewall.queue.message import ScreenChunk, pack
from alknet_firewall.queue.settings import WorkerSettings
from alknet_firewall.rows import result_row
from alknet_firewall.schema import Document, Verdict
from alknet_firewall_worker.screening import Outcome, Screening
from tests.queue_helpers import FakeScreener, Sent, eager_batcher, fake_verdict

DOCS = [Document(id=f"d{i}", text=f"a plain sentence {i}", meta={"n": i}) for i in range(4)]


def field(doc: Document) -> str:
    return result_field(doc.id, doc.digest)


def chunk_of(docs: list[Document], job: str = "j", chunk_id: str = "c") -> ScreenChunk:
    return ScreenChunk(job=job, id=chunk_id, docs=docs)


@pytest.fixture
def screener() -> FakeScreener:
    return FakeScreener()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def sent() -> Sent:
    return Sent()


@pytest.fixture
def screening(screener: FakeScreener, store: MemoryStore, sent: Sent) -> Iterator[Screening]:
    yield from make_screening(screener, store, sent)


def make_screening(screener: FakeScreener, store: MemoryStore, sent: Sent) -> Iterator[Screening]:
    batcher = eager_batcher(
        screener.screen_batch,
        on_start=lambda tags: store.count_starts([t for t in tags if isinstance(t, tuple)]),
    )
    limits = WorkerSettings(max_deliveries=2, store_retries=0, retry_backoff_s=0.01)
    yield Screening(store, screener, batcher, limits, resend=sent)
    batcher.close()


def test_a_chunk_is_screened_in_one_pass_stored_and_cached(
    screening: Screening, store: MemoryStore, screener: FakeScreener
) -> None:
    store.add_chunks("j", [chunk_of(DOCS)])
    report = screening.handle(chunk_of(DOCS))
    assert report.outcomes[Outcome.SCREENED] == 4 and not report.split
    assert screener.batches == [4]
    for doc in DOCS:
        assert store.rows[("j", field(doc))] == result_row(doc.id, doc.meta, fake_verdict(doc.text))
        assert store.cached_verdict(FakeScreener.codebook_version, doc.digest) is not None
    assert store.counters["j"][JobField.DONE] == 4
    assert store.chunks == {} and store.deliveries == {}  # off the outbox once stored


def test_a_redelivery_after_the_rows_only_clears_the_chunk(
    screening: Screening, screener: FakeScreener
) -> None:
    screening.handle(chunk_of(DOCS))
    report = screening.handle(chunk_of(DOCS))
    assert report.outcomes == {Outcome.DUPLICATE: 4} and not report.split
    assert screener.batches == [4]


def test_another_job_gets_cached_verdicts_without_the_model(
    screening: Screening, screener: FakeScreener, store: MemoryStore
) -> None:
    screening.handle(chunk_of(DOCS[:2]))
    report = screening.handle(chunk_of(DOCS, job="k"))
    assert report.outcomes == {Outcome.CACHED: 2, Outcome.SCREENED: 2, Outcome.DUPLICATE: 0}
    assert screener.batches == [2, 2]  # only the two not cached
    assert store.rows[("k", field(DOCS[0]))] == store.rows[("j", field(DOCS[0]))]


def test_a_chunk_delivered_before_is_split_into_suspect_halves_of_its_unfinished_documents(
    screening: Screening, store: MemoryStore, sent: Sent, screener: FakeScreener
) -> None:
    five = [*DOCS, Document(id="d4", text="one more")]
    screening.handle(chunk_of(five[:1], chunk_id="other"))  # d0 has its row already
    store.add_chunks("j", [chunk_of(five)])
    store.count_starts([("j", "c")])  # a forward pass whose worker died
    report = screening.handle(chunk_of(five))
    assert report.split and screener.batches == [1]  # nothing screened
    assert [[d.id for d in c.docs] for c in sent.chunks] == [["d1", "d2"], ["d3", "d4"]]
    assert [c.id for c in sent.chunks] == ["c.0", "c.1"] and all(c.suspect for c in sent.chunks)
    assert set(store.chunks) == {("j", "c.0"), ("j", "c.1")}  # the halves replace it
    assert ("j", "c") not in store.deliveries


def test_a_copy_of_a_chunk_split_before_is_dropped_its_halves_carry_its_documents(
    screening: Screening, store: MemoryStore, sent: Sent, screener: FakeScreener
) -> None:
    # A dead worker's restored message and a re-drive of the same chunk: two copies.
    store.add_chunks("j", [chunk_of(DOCS)])
    store.count_starts([("j", "c")])
    assert screening.handle(chunk_of(DOCS)).split
    report = screening.handle(chunk_of(DOCS))  # the other copy
    assert report.superseded and not report.split and report.fate == "superseded"
    assert len(sent.chunks) == 2 and screener.batches == []  # no second split, no pass
    assert set(store.chunks) == {("j", "c.0"), ("j", "c.1")}
    for half in sent.chunks:
        screening.handle(half)
    assert all(("j", field(doc)) in store.rows for doc in DOCS)


def test_a_chunk_id_is_split_once_when_two_copies_race_past_the_outbox_check(
    store: MemoryStore,
) -> None:
    store.add_chunks("j", [chunk_of(DOCS)])
    halves = chunk_of(DOCS).halves(DOCS)
    assert store.replace_chunk("j", "c", halves)
    assert not store.replace_chunk("j", "c", halves)  # the slower copy must not resend


def test_a_chunk_whose_job_has_an_empty_outbox_is_screened_not_dropped(
    screening: Screening, store: MemoryStore
) -> None:
    # The outbox is gone when every chunk finished or the job expired: nothing to supersede.
    report = screening.handle(chunk_of(DOCS))
    assert not report.superseded and report.outcomes[Outcome.SCREENED] == 4


def test_a_suspect_half_runs_alone_and_a_single_document_is_never_split(
    screening: Screening, store: MemoryStore, sent: Sent, screener: FakeScreener
) -> None:
    (half, _) = chunk_of(DOCS).halves(DOCS)
    assert screening.handle(half).outcomes[Outcome.SCREENED] == 2
    single = chunk_of(DOCS[3:], chunk_id="s")
    store.count_starts([("j", "s")])
    report = screening.handle(single)  # second delivery, but nothing left to split
    assert not report.split and report.outcomes[Outcome.SCREENED] == 1
    assert sent.chunks == []


def test_a_single_document_delivered_too_often_gets_an_error_row_not_a_loop(
    screening: Screening, screener: FakeScreener, store: MemoryStore
) -> None:
    single = chunk_of(DOCS[:1])
    for _ in range(2):  # two forward passes whose worker died
        store.count_starts([("j", "c")])
    assert screening.handle(single).outcomes[Outcome.GAVE_UP] == 1
    row = store.rows[("j", field(DOCS[0]))]
    assert row["decision"] == "error" and row["error"].startswith("gave up after 2 deliveries")
    assert screener.batches == [] and store.counters["j"][JobField.ERRORS] == 1


def test_a_chunk_counts_as_started_once_its_forward_pass_begins(
    store: MemoryStore, sent: Sent
) -> None:
    seen: list[int] = []

    class Watching(FakeScreener):
        def screen_batch(self, texts: Sequence[str]) -> list[Verdict]:
            seen.append(store.deliveries[("j", "c")])
            return super().screen_batch(texts)

    for screening in make_screening(Watching(), store, sent):
        screening.handle(chunk_of(DOCS))
    assert seen == [1]  # counted before the model ran: a crash there counts against it
    assert ("j", "c") not in store.deliveries  # and forgotten once its rows are stored


def test_a_model_error_is_retried_then_stored_never_cached_and_spares_its_chunk_mates(
    screening: Screening, store: MemoryStore, screener: FakeScreener
) -> None:
    poison = Document(id="p", text="a POISON pill")
    report = screening.handle(chunk_of([DOCS[0], poison, DOCS[1]]))
    assert report.outcomes == {Outcome.SCREENED: 2, Outcome.ERROR: 1, Outcome.DUPLICATE: 0}
    row = store.rows[("j", field(poison))]
    assert row["decision"] == "error" and "POISON" in row["error"]
    assert (FakeScreener.codebook_version, poison.digest) not in store.cache
    # the batch, its halves down to the culprit, then model_retries (2) tries alone
    assert screener.batches == [3, 1, 2, 1, 1, 1, 1]


def test_pack_bounds_messages_by_count_and_characters() -> None:
    docs = [Document(id=str(i), text="x" * n) for i, n in enumerate([10, 10, 10, 50, 10, 200])]
    chunks = list(pack("j", docs, max_docs=2, max_chars=60))
    assert [[d.id for d in c.docs] for c in chunks] == [["0", "1"], ["2", "3"], ["4"], ["5"]]
    assert len({c.id for c in chunks}) == 4 and all(c.job == "j" for c in chunks)


@pytest.mark.redis
def test_the_memory_store_answers_like_the_redis_store() -> None:
    from alknet_firewall.queue.store import ResultStore
    from tests.queue_helpers import namespace

    verdict = fake_verdict(DOCS[0].text)
    failed = Verdict.failed("bad", verdict.codebook_version)
    version = verdict.codebook_version
    rows = [("f", {"id": "a"}), ("g", result_row("g", {}, failed))]
    answers = []

    def add_chunks(store: MemoryStore | ResultStore, chunks: list[ScreenChunk]) -> None:
        if isinstance(store, MemoryStore):
            store.add_chunks("j", chunks)
        else:
            pipe = store.client.pipeline()
            store.add_chunks(pipe, "j", chunks)
            pipe.execute()

    with namespace() as ns:
        for store in (MemoryStore(), ResultStore.from_settings(ns.settings().queue)):
            answers.append(
                [
                    store.begin_chunk("j", "c", ["f", "g"], version, [DOCS[0].digest, "x"]),
                    store.count_starts([("j", "c"), ("j", "c")]),
                    store.begin_chunk("j", "c", ["f"], version, []),
                    store.finish_chunk("j", "c", rows, [(DOCS[0].digest, verdict), ("x", failed)]),
                    store.finish_chunk("j", "c", [("f", {"id": "b"})], []),
                    store.begin_chunk("j", "c", ["f", "g", "h"], version, [DOCS[0].digest, "x"]),
                    add_chunks(store, [chunk_of(DOCS[:1], chunk_id="k")]),
                    store.begin_chunk("j", "c", [], version, []),  # superseded
                    store.replace_chunk("j", "k", chunk_of(DOCS, chunk_id="k").halves(DOCS)),
                    store.replace_chunk("j", "k", chunk_of(DOCS, chunk_id="k").halves(DOCS)),
                    store.begin_chunk("j", "k.1", [], version, []),
                ]
            )
    memory, redis = answers
    assert memory == redis
    assert [start.started for start in memory[0:3:2]] == [0, 2]
    assert memory[3:5] == [2, 0]
    assert memory[5].started == 0  # forgotten once the chunk was finished
    assert not memory[5].superseded and memory[7].superseded  # the outbox lists only k
    assert memory[8:10] == [True, False]  # split once
    assert not memory[10].superseded
    assert memory[5].done == [True, True, False] and memory[5].cached == [verdict, None]
