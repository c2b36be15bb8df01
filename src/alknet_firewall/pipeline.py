"""Work on the next item while the caller handles this one: a one-stage pipeline.

Screening is model-free work (reading, validating, tokenising, planning batches) followed
by the model. The model's forward passes release the GIL (torch kernels, or waiting on
the GPU), so the model-free half of the next chunk can run beside them on one thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
U = TypeVar("U")


def ahead(items: Iterable[T], prepare: Callable[[T], U]) -> Iterator[U]:
    """`prepare(item)` for each item, in order, the next one read and prepared on a
    background thread while the caller works on this one.

    On a GPU, tokenising is a third of screening's time (bench/THROUGHPUT-GPU-WORKERS.md);
    this hides it behind the forward passes. An exception from reading or preparing is
    raised where its item would have been yielded."""
    source = iter(items)

    def next_prepared() -> list[U]:  # empty once `items` is exhausted
        for item in source:
            return [prepare(item)]
        return []

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare-ahead") as pool:
        pending = pool.submit(next_prepared)
        while prepared := pending.result():
            pending = pool.submit(next_prepared)
            yield prepared[0]
