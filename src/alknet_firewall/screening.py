"""The screening service: records in, one row each out, whatever carries them.

What every path does between reading a record and storing its row lives here: the
`screen` command runs it in process with no cache; the producer and the worker use its
parts around the queue (the worker's per-chunk steps are in `alknet_firewall_worker.screening`).

- `Screener`: what the service needs of the model (`Firewall` is one).
- `VerdictCache`: same text, same codebook, same verdict. `NullCache` in process; the
  queue's Redis store (`alknet_firewall.queue.store.ResultStore`) on the queue.
- `Stages`: screening in two steps, preparing (tokenising, no model) and running the
  model, so that the next texts are prepared while the model runs on others.
- `ScreeningService.rows_by_chunk`: the `screen` command's loop, each chunk prepared
  while the one before it is screened.
- `screen_isolating`: failure isolation. A batch that makes the model raise is halved
  and each half screened again, so only the culprit gets an error verdict and its
  batch-mates get theirs, in about 2 log2(n) extra passes for one culprit among n.
- Rows come from `alknet_firewall.rows`: one shape for verdicts and unreadable records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from alknet_firewall.errors import ScreeningError
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
class StagedScreener(Screener, Protocol):
    """A screener whose `screen_batch(texts)` is `screen_prepared([prepare(texts)])`.

    `prepare` does what comes before the model (refusals, tokenising); `screen_prepared`
    runs the model on prepared parts, which share its forward passes, and gives one
    verdict per text of every part, in order. `Firewall` is one. A subclass that
    overrides only `screen_batch` breaks that equality: the staged paths would not see it.
    """

    def prepare(self, texts: Sequence[str]) -> Any: ...

    def screen_prepared(self, parts: Sequence[Any]) -> list[Verdict]: ...


@dataclass(frozen=True, slots=True)
class Stages(Generic[P]):
    """A screener's two steps: `prepare` texts (no model), then `run` the model on
    prepared parts (one verdict per text of every part, in order)."""

    prepare: Callable[[Sequence[str]], P]
    run: Callable[[Sequence[P]], list[Verdict]]

    def screen_batch(self, texts: Sequence[str]) -> list[Verdict]:
        """Both steps at once."""
        return self.run([self.prepare(texts)])


def stages(screener: Screener) -> Stages[Any]:
    """The screener's own steps, or `unstaged(screener.screen_batch)` for one with only
    `screen_batch` (fakes, the queue's remote screener)."""
    if isinstance(screener, StagedScreener):
        return Stages(screener.prepare, screener.screen_prepared)
    return unstaged(screener.screen_batch)


def unstaged(screen_batch: Callable[[Sequence[str]], list[Verdict]]) -> Stages[list[str]]:
    """Two steps around a plain `screen_batch`: preparing only keeps the texts, and the
    run screens all the parts' texts in one call."""
    return Stages(list, lambda parts: screen_batch([text for part in parts for text in part]))


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

    An item that makes `run` raise on its own gets a ScreeningError in its place. A run
    that returns the wrong number of verdicts counts as raising. `first`, when given,
    replaces the first `run(items)`: the same screening over all of `items`, such as a
    pass over texts prepared in advance; the halves, the rare path, go through `run`.
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
        waiting = self._lookup(records)
        texts = [doc.text for _, doc in waiting.todo]
        return self._finish(waiting, screen_isolating(self.screener.screen_batch, texts))

    def rows_by_chunk(self, chunks: Iterable[Sequence[Record]]) -> Iterator[list[dict[str, Any]]]:
        """`rows` of each chunk in turn, the next chunk's texts prepared (tokenised) on a
        second thread while the model screens this one's. The next chunk's cache lookup
        comes before this one's verdicts are cached: a text in both is screened twice."""
        steps = stages(self.screener)
        with ThreadPoolExecutor(1, thread_name_prefix="prepare") as pool:
            ahead: tuple[_Lookup, Future[Any]] | None = None
            for chunk in chunks:
                waiting = self._lookup(chunk)
                prepared = pool.submit(steps.prepare, [doc.text for _, doc in waiting.todo])
                if ahead is not None:
                    yield self._screen_prepared(steps, *ahead)
                ahead = (waiting, prepared)
            if ahead is not None:
                yield self._screen_prepared(steps, *ahead)

    def _screen_prepared(
        self, steps: Stages[Any], waiting: _Lookup, prepared: Future[Any]
    ) -> list[dict[str, Any]]:
        texts = [doc.text for _, doc in waiting.todo]

        def first() -> list[Verdict]:
            # A prepare that raised counts as this pass raising: halves, prepared again.
            return steps.run([prepared.result()])

        return self._finish(waiting, screen_isolating(steps.screen_batch, texts, first=first))

    def _lookup(self, records: Sequence[Record]) -> _Lookup:
        """Rows for what needs no model (unreadable records, cached verdicts); the rest
        to screen."""
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
        return _Lookup(rows, todo)

    def _finish(
        self, waiting: _Lookup, screened: list[Verdict | ScreeningError]
    ) -> list[dict[str, Any]]:
        version = self.codebook_version
        rows = waiting.rows
        for (i, doc), result in zip(waiting.todo, screened, strict=True):
            verdict = (
                result if isinstance(result, Verdict) else Verdict.failed(str(result), version)
            )
            if verdict.error is None:  # a model error may pass: never remember it
                self.cache.cache_verdict(doc.digest, verdict)
            rows[i] = result_row(doc.id, doc.meta, verdict)
        return [row for row in rows if row is not None]


@dataclass(frozen=True, slots=True)
class _Lookup:
    """A chunk's rows so far, and the documents still to screen (index, document)."""

    rows: list[dict[str, Any] | None]
    todo: list[tuple[int, Document]]
