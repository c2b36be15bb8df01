"""`alknet-firewall worker`: start a screening worker from config.toml.

Flags override config.toml for this run; everything else (broker, batching, limits)
comes from settings. The same worker runs as `celery -A alknet_firewall_worker worker`. Imports are
lazy so that `alknet-firewall --help` does not load Celery.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `worker` to the `alknet-firewall` parser."""
    p = subparsers.add_parser(
        "worker",
        help="run a screening worker (Celery, Redis)",
        description="Load the model once, then screen queued documents in micro-batches.",
    )
    p.add_argument("--concurrency", type=int, help="documents in flight (threads)")
    p.add_argument(
        "--pool",
        choices=("threads", "solo"),
        help="threads: micro-batching (default); solo: one document at a time",
    )
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), help="where the model runs")
    p.add_argument("--queues", help="comma-separated queues to consume (default: [queue].queue)")
    p.add_argument("--metrics-port", type=int, help="Prometheus port, 0 for none")
    p.add_argument("--loglevel", default="INFO", help="Celery log level")
    p.set_defaults(func=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    from alknet_firewall.config import load_settings
    from alknet_firewall_worker.runtime import WorkerApp

    settings = load_settings(getattr(args, "config", None))
    worker = settings.queue.worker.model_copy(
        update={
            name: value
            for name, value in (
                ("concurrency", args.concurrency),
                ("pool", args.pool),
                ("metrics_port", args.metrics_port),
            )
            if value is not None
        }
    )
    model = settings.model.model_copy(update={"device": args.device or settings.model.device})
    queue = settings.queue.model_copy(update={"worker": worker})
    settings = settings.model_copy(update={"queue": queue, "model": model})
    app = WorkerApp(settings)
    app.worker_main(
        [
            "worker",
            f"--pool={worker.pool}",
            f"--concurrency={worker.concurrency}",
            f"--queues={args.queues or queue.queue}",
            f"--loglevel={args.loglevel}",
        ]
    )
    return 0
