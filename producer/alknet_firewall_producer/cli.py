"""The producer's subcommands: `enqueue`, `status` and `results`.

`register` adds them to the main `alknet-firewall` parser. Handlers import their modules
lazily, so `--help` stays fast; nothing here imports torch. Each handler returns the
exit code: 0 done, 1 failed (the message says why and what to do), 3 for `results` when
some documents have no row yet (the rows that exist are written).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from alknet_firewall import sources

if TYPE_CHECKING:
    from alknet_firewall.config import Settings

EXIT_INCOMPLETE = 3


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `enqueue`, `status` and `results` to the `alknet-firewall` parser."""
    enqueue = subparsers.add_parser(
        "enqueue",
        help="send documents to the screening queue as a named job",
        description="Stream INPUT into the Redis queue; workers screen it. Re-running "
        "the same command resumes the job, and sends nothing once it is finished.",
    )
    enqueue.add_argument("input", help="JSONL, CSV, chat log (JSONL with messages), folder, -")
    enqueue.add_argument("--job", required=True, help="the job's name (letters, digits, _.-)")
    enqueue.add_argument("--format", choices=sources.FORMATS, default="auto", help="input format")
    enqueue.set_defaults(func=run_enqueue)

    status = subparsers.add_parser("status", help="show a queued job's progress")
    status.add_argument("job", metavar="NAME")
    status.add_argument("--follow", action="store_true", help="progress bar until done")
    status.set_defaults(func=run_status)

    results = subparsers.add_parser("results", help="export a queued job's rows")
    results.add_argument("job", metavar="NAME")
    results.add_argument("--out", required=True, help="output file: .jsonl, or .csv")
    results.set_defaults(func=run_results)


def _settings(args: argparse.Namespace) -> Settings:
    from alknet_firewall.config import load_settings

    return load_settings(getattr(args, "config", None))


def run_enqueue(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from alknet_firewall.errors import QueueUnavailable
    from alknet_firewall_producer.enqueue import enqueue

    settings = _settings(args)
    with tqdm(unit="doc", desc=f"enqueue {args.job}", file=sys.stderr) as bar:

        def on_chunk(report: Any) -> None:
            bar.update(report.read - bar.n)

        try:
            report = enqueue(settings, args.input, args.job, fmt=args.format, on_chunk=on_chunk)
        except (QueueUnavailable, ValueError, OSError) as exc:
            print(f"enqueue failed: {exc}", file=sys.stderr)
            return 1
    print(
        f"job {report.job}: {report.read:,} read, {report.sent:,} sent, "
        f"{report.skipped:,} skipped (already screened), {report.read_errors:,} unreadable; "
        f"waited {report.waited_s:.1f} s for the queue to shrink"
    )
    return 0


def _book(settings: Settings) -> Any:
    from alknet_firewall.queue.jobs import JobBook
    from alknet_firewall.queue.store import ResultStore

    return JobBook(ResultStore.from_settings(settings.queue))


def _redis_failed(command: str, settings: Settings, exc: Exception) -> int:
    """A one-line error for a Redis that is away or refuses us: never a traceback, and
    never the password (the URL is printed with it masked)."""
    from kombu.utils.url import maybe_sanitize_url

    url = maybe_sanitize_url(settings.queue.result_url)
    print(f"{command} failed: Redis at {url}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 1


def run_status(args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError

    from alknet_firewall_producer import status

    settings = _settings(args)
    try:
        book = _book(settings)
        return status.follow(book, args.job) if args.follow else status.show(book, args.job)
    except RedisError as exc:
        return _redis_failed("status", settings, exc)


def run_results(args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError

    settings = _settings(args)
    try:
        return _export(args, settings)
    except RedisError as exc:
        return _redis_failed("results", settings, exc)


def _export(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from alknet_firewall_producer.export import export

    book = _book(settings)
    if book.progress(args.job) is None:
        print(f"no job named {args.job!r} (or its results expired)", file=sys.stderr)
        return 1
    report = export(book, args.job, Path(args.out))
    print(f"wrote {report.written:,} rows to {args.out}")
    if report.pending:
        print(f"{report.pending:,} documents are not screened yet", file=sys.stderr)
        return EXIT_INCOMPLETE
    return 0
