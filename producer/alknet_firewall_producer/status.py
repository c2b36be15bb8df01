"""`alknet-firewall status NAME`: how far a job is, once or followed with a progress bar."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

from alknet_firewall.queue.jobs import JobBook, JobProgress


def describe(p: JobProgress) -> str:
    """One line: done / errors / pending, throughput, whether enqueuing is over."""
    rate = p.docs_per_second
    speed = "-" if rate is None else f"{rate:,.1f}"
    state = "finished" if p.finished else ("enqueued" if p.enqueue_finished else "enqueuing")
    c = p.counters
    line = (
        f"job {p.job}: {state}; {p.done:,} of {p.total:,} done ({p.errors:,} errors), "
        f"{p.pending:,} pending; {speed} docs/s; this run: {c['sent']:,} sent, "
        f"{c['skipped']:,} skipped, {c['read_errors']:,} unreadable"
    )
    if p.redriven_at is not None:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(p.redriven_at))
        line += f"; stalled, re-drove {p.redriven:,} lost messages (last {when})"
    return line


def show(book: JobBook, job: str, out: TextIO = sys.stdout) -> int:
    """Print the job's status; 1 when Redis knows no such job."""
    progress = book.progress(job)
    if progress is None:
        print(f"no job named {job!r} (or its results expired)", file=sys.stderr)
        return 1
    print(describe(progress), file=out)
    return 0


def follow(book: JobBook, job: str, poll_s: float = 1.0, out: TextIO = sys.stderr) -> int:
    """Show a progress bar until the job is finished; 1 when Redis knows no such job."""
    progress = book.progress(job)
    if progress is None:
        return show(book, job)
    with tqdm(total=progress.total, unit="doc", file=out, dynamic_ncols=True) as bar:
        while True:
            bar.total = progress.total
            bar.n = progress.done
            bar.set_postfix(errors=progress.errors, pending=progress.pending, refresh=False)
            bar.refresh()
            if progress.finished:
                break
            time.sleep(poll_s)
            progress = book.progress(job) or progress
    print(describe(progress))
    return 0
