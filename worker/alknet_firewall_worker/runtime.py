"""Per-process worker state, built once when the worker starts: model, batcher, store,
and the two background loops (heartbeats for the messages held, the re-drive sweep).

`WorkerApp` is the Celery app a worker runs: the shared one (`alknet_firewall.queue.app`)
plus its task module and the factory that loads this process's screener, an explicit
parameter so that tests start workers on a fake model without patching anything.

Built in the `worker_init` signal, before the consumer connects, so no message is
reserved while the model loads (seconds) and no `worker_proc_alive_timeout` applies:
the threads and solo pools have no child processes. The model therefore lives in the
worker's own process, where CUDA is first touched after any fork (there is none).
A failure here ends the worker: a worker without a model would take messages it cannot
screen.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from celery.concurrency import get_implementation
from celery.signals import worker_init, worker_shutdown

from alknet_firewall.config import Settings
from alknet_firewall.queue.app import FirewallApp
from alknet_firewall.queue.broker import queue_length
from alknet_firewall.queue.connection import redis_client
from alknet_firewall.queue.keys import Keys
from alknet_firewall.queue.message import ScreenChunk
from alknet_firewall.queue.redrive import Redrive
from alknet_firewall.queue.store import ResultStore
from alknet_firewall.screening import PreparingScreener, Screener, prepared_run
from alknet_firewall_worker import heartbeat, metrics
from alknet_firewall_worker.batching import MicroBatcher
from alknet_firewall_worker.screening import Screening

log = logging.getLogger(__name__)

SUPPORTED_POOLS = ("threads", "solo")
OVERRUN_EXIT_CODE = 70  # EX_SOFTWARE: the orchestrator restarts the worker


@dataclass(frozen=True, slots=True)
class Runtime:
    """What the task needs in this process."""

    settings: Settings
    screening: Screening


_runtime: Runtime | None = None


def current() -> Runtime:
    """This process's runtime; it exists once `worker_init` has run."""
    if _runtime is None:
        raise RuntimeError("the worker runtime is not started (worker_init has not run)")
    return _runtime


ScreenerFactory = Callable[[Settings], Screener]
TASK_MODULES = ("alknet_firewall_worker.tasks",)  # the task body: model, batcher, store


def load_firewall(settings: Settings) -> Screener:
    """The firewall this process screens with: model and codebook, loaded once."""
    from alknet_firewall.firewall import Firewall  # torch: worker processes only

    firewall: Screener = Firewall.from_settings(settings)
    return firewall


class WorkerApp(FirewallApp):
    """The worker's Celery app: the shared app, its task module, and its screener factory."""

    def __init__(self, settings: Settings, load_screener: ScreenerFactory = load_firewall) -> None:
        super().__init__(settings, include=TASK_MODULES)
        self.load_screener = load_screener


def start(app: FirewallApp, load_screener: ScreenerFactory = load_firewall) -> Runtime:
    """Load the model, start the batcher, the metrics endpoint, the heartbeats and the
    re-drive sweep, publish the codebook."""
    global _runtime
    settings = app.settings
    q = settings.queue
    screener = load_screener(settings)
    store = ResultStore.from_settings(q)
    batcher = MicroBatcher(
        screener.screen_batch,
        # the next batch tokenised while this one is screened, where the screener can
        prepare=partial(prepared_run, screener)
        if isinstance(screener, PreparingScreener)
        else None,
        token_budget=q.batch.document_tokens,
        max_parcels=q.worker.concurrency,
        # A solo worker runs one task at a time: waiting for batch-mates only adds delay.
        max_wait_s=0.0 if q.worker.pool == "solo" else q.batch.max_wait_ms / 1000,
        time_limit_s=q.worker.batch_time_limit_s,
        on_batch=metrics.record_batch,
        on_overrun=_die,
        on_start=lambda tags: store.count_starts(_chunk_tags(tags)),
        on_end=lambda tags: store.count_ends(_chunk_tags(tags)),
    )
    store.publish_codebook(screener.codebook_version)
    broker = redis_client(q.broker_url)
    keys = Keys.from_settings(q)
    metrics.serve(q.worker.metrics_port, q.queue, lambda: queue_length(broker, keys))
    heartbeat.every(
        q.heartbeat_s,
        "heartbeat",
        lambda: heartbeat.beat(broker, keys.unacked_index, heartbeat.held_delivery_tags()),
    )
    redrive = Redrive(store, broker, lambda chunks: _redrive(app, chunks), q.worker.redrive_after_s)
    heartbeat.every(redrive.interval_s, "re-drive", redrive.sweep)
    screening = Screening(store, screener, batcher, q.worker, resend=app.send_chunks)
    _runtime = Runtime(settings, screening)
    log.info("screening with codebook %s", screener.codebook_version)
    return _runtime


def _chunk_tags(tags: list[object]) -> list[tuple[str, str]]:
    """The (job, chunk id) tags `Screening` gives its parcels."""
    return [t for t in tags if isinstance(t, tuple)]


def _redrive(app: FirewallApp, chunks: Sequence[ScreenChunk]) -> None:
    app.send_chunks(chunks)
    metrics.REDRIVEN.inc(len(chunks))


def _die(seconds: float) -> None:
    # A forward pass cannot be interrupted from Python. Its messages are unacked, so they
    # come back once their heartbeats stop (the visibility timeout); the chunks that were
    # in the hung pass were counted as it began, so each is split when it comes back and
    # its halves run on their own. The chunks queued behind it come back unsuspected.
    log.critical("a forward pass has run %.0f s, over the limit: exiting", seconds)
    logging.shutdown()
    os._exit(OVERRUN_EXIT_CODE)


def _pool_name(pool: Any) -> str:
    """ "threads" or "solo" for the pool Celery was given (--pool wins over config.toml)."""
    implementation = get_implementation(pool)
    for name in SUPPORTED_POOLS:
        if implementation is get_implementation(name):
            return name
    raise SystemExit(
        f"the {pool} pool cannot batch: start the worker with --pool threads "
        "(or solo), and more worker processes for more cores"
    )


@worker_init.connect  # type: ignore[untyped-decorator]
def _on_worker_init(sender: Any, **_: Any) -> None:
    pool = _pool_name(sender.pool_cls)
    app = sender.app
    if not isinstance(app, WorkerApp):
        raise SystemExit(
            "the Celery app is not alknet's worker app: use `celery -A alknet_firewall_worker`"
        )
    worker = app.settings.queue.worker.model_copy(update={"pool": pool})
    queue = app.settings.queue.model_copy(update={"worker": worker})
    app.settings = app.settings.model_copy(update={"queue": queue})
    try:
        start(app, app.load_screener)
    except Exception as exc:
        log.critical("the worker cannot start", exc_info=True)
        raise SystemExit(f"the worker cannot start: {exc}") from exc


@worker_shutdown.connect  # type: ignore[untyped-decorator]
def _on_worker_shutdown(**_: Any) -> None:
    if _runtime is not None:
        _runtime.screening.batcher.close()
