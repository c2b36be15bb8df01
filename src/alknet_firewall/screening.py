"""The screening service: records in, one row each out, whatever carries them.

What every path does between reading a record and storing its row lives here: the
`screen` command runs it in process with no cache; the producer and the worker use its
parts around the queue (the worker's per-chunk steps are in `alknet_firewall_worker.screening`).

- `Screener`: what the service needs of the model (`Firewall` is one).
- `VerdictCache`: same text, same codebook, same verdict. `NullCache` in process; the
  queue's Redis store (`alknet_firewall.queue.store.ResultStore`) on the queue.
- `screen_isolating`: failure isolation. A batch that makes the model raise is halved
  and each half screened again, so only the culprit gets an error verdict and its
  batch-mates get theirs, in about 2 log2(n) extra passes for one culprit among n.
- `ScreeningService.rows_ahead`: the `screen` command's loop; the next chunk is read,
  looked up and tokenised on another thread while the model screens this one.
- Rows come from `alknet_firewall.rows`: one shape for verdicts and unreadable records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from alknet_firewall.errors import ScreeningError
from alknet_firewall.pipeline import ahead
from alknet_firewall.rows import result_row, unreadable_row
from alknet_firewall.schema import Document, Verdict
from alknet_firewall.sources import Record

REASON_MAX_CHARS = 500  # a model error's reason in a row: enough to recognise it

T = TypeVar("T")
P = TypeVar("P")


class Screener(Protocol):
    """The model side of screening (`alknet_firewall.firewall.Firewall`)."""

    @property
    def codebook_version(self) -> str: ...

    def screen_batch(self, texts: Sequence[str]) -> list[Verdict]: ...


@runtime_checkable
class PreparingScreener(Screener, Protocol[P]):
    """A screener whose model-free half (validation, tokenising, batch planning) can run
    on another thread while the model reads other texts (`Firewall` is one)."""

    def prepare(self, texts: Sequence[str]) -> P: ...

    def screen_prepared(self, prepared: P) -> list[Verdict]: ...


class VerdictCache(Protocol):
    """Verdicts by (codebook version, text digest)."""

    def cached_verdict(self, codebook_version: str, digest: str) -> Verdict | None: ...

    def cache_verdict(self, digest: str, verdict: Verdict) -> None: ...


class NullCache:
    """Remembers nothing: one `screen` run rarely sees the same text twice."""

    def cached_verdict(self, codebook_version: str, digest: str) -> Verdict | None:
        return None

    def cache_verdict(self, digest: str, verdict: Verdict) -> None:
        return None


def model_error(exc: BaseException) -> ScreeningError:
    """The error of a document the model raised on when screened alone."""
    return ScreeningError(f"model error: {type(exc).__name__}: {exc}"[:REASON_MAX_CHARS])


def screen_isolating(
    run: Callable[[Sequence[T]], list[Verdict]],
    items: Sequence[T],
    *,
    first: Callable[[], list[Verdict]] | None = None,
) -> list[Verdict | ScreeningError]:
    """`run(items)`, one verdict per item; when it raises, each half is run again.

    `first`, when given, is tried in place of `run(items)` (the batch prepared ahead,
    `prepared_run`); only the halves go through `run`. An item that makes `run` raise on
    its own gets a ScreeningError in its place. A run that returns the wrong number of
    verdicts counts as raising.
    """
    if not items:
        return []
    try:
        verdicts = first() if first is not None else run(items)
        if len(verdicts) != len(items):
            raise RuntimeError(f"{len(verdicts)} verdicts for {len(items)} texts")
    except Exception as exc:
        if len(items) == 1:
            return [model_error(exc)]
        half = len(items) // 2
        return screen_isolating(run, items[:half]) + screen_isolating(run, items[half:])
    return list(verdicts)


def prepared_run(screener: Screener, texts: Sequence[str]) -> Callable[[], list[Verdict]]:
    """A call that screens `texts`, with the screener's model-free half done now.

    A screener that cannot prepare runs everything when called. A failed preparation is
    raised when the call is made, where `screen_isolating` isolates it."""
    if not isinstance(screener, PreparingScreener):
        return lambda: screener.screen_batch(texts)
    try:
        prepared = screener.prepare(texts)
    except Exception as exc:
        failure = exc

        def fail() -> list[Verdict]:
            raise failure

        return fail
    return lambda: screener.screen_prepared(prepared)


@dataclass(frozen=True, slots=True)
class ScreenPlan:
    """A chunk of records read, looked up in the cache, and its other texts prepared."""

    rows: list[dict[str, Any] | None]  # unreadable and cached records' rows, in place
    todo: list[tuple[int, Document]]  # the records the model screens, by position
    run: Callable[[], list[Verdict]]  # screens the todo texts (`prepared_run`)


@dataclass(frozen=True, slots=True)
class ScreeningService:
    """Screens records into rows: validated, cached, isolated, in input order."""

    screener: Screener
    cache: VerdictCache = field(default_factory=NullCache)

    @property
    def codebook_version(self) -> str:
        return self.screener.codebook_version

    def rows(self, records: Sequence[Record]) -> list[dict[str, Any]]:
        """One row per record, in order; a record that cannot be screened gets an error row."""
        return self.finish(self.plan(records))

    def rows_ahead(self, chunks: Iterable[Sequence[Record]]) -> Iterator[list[dict[str, Any]]]:
        """`rows` of each chunk, in order, with the next chunk read, looked up and
        prepared on another thread while this one is screened."""
        for plan in ahead(chunks, self.plan):
            yield self.finish(plan)

    def plan(self, records: Sequence[Record]) -> ScreenPlan:
        """Everything before the model: unreadable records' rows, cache hits, and the
        remaining texts prepared for the screener."""
        version = self.codebook_version
        rows: list[dict[str, Any] | None] = [None] * len(records)
        todo: list[tuple[int, Document]] = []
        for i, record in enumerate(records):
            if not isinstance(record, Document):
                rows[i] = unreadable_row(record, version)
            elif (cached := self.cache.cached_verdict(version, record.digest)) is not None:
                rows[i] = result_row(record.id, record.meta, cached)
            else:
                todo.append((i, record))
        run = prepared_run(self.screener, [doc.text for _, doc in todo])
        return ScreenPlan(rows, todo, run)

    def finish(self, plan: ScreenPlan) -> list[dict[str, Any]]:
        """Screen a plan's remaining texts (isolating failures) and fill in their rows."""
        version = self.codebook_version
        rows = list(plan.rows)
        texts = [doc.text for _, doc in plan.todo]
        screened = screen_isolating(self.screener.screen_batch, texts, first=plan.run)
        for (i, doc), result in zip(plan.todo, screened, strict=True):
            verdict = (
                result if isinstance(result, Verdict) else Verdict.failed(str(result), version)
            )
            if verdict.error is None:  # a model error may pass: never remember it
                self.cache.cache_verdict(doc.digest, verdict)
            rows[i] = result_row(doc.id, doc.meta, verdict)
        return [row for row in rows if row is not None]
