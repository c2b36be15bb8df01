"""The batch-screening worker: a Celery app that micro-batches documents from Redis.

`celery -A worker worker` finds the app in `worker.celery`; `alknet-firewall worker` starts
the same app from config.toml. Modules, one idea each:

    app        builds the Celery app from settings (JSON only, late acks, transport options)
    celery     the module-level app that `celery -A worker` and Flower load
    broker     broker transport options and the queue-length probe
    keys       every Redis key name and TTL
    rows       the output row of one document, shared with `alknet-firewall screen`'s shape
    store      the results backend: idempotent verdict writes, delivery counts, cache, jobs
    batching   the micro-batcher: token budget or max wait, failure isolation, watchdog
    screening  what happens to one delivered document (cache, batch, store, give up)
    runtime    the per-process state, built once when the worker starts (model loaded here)
    tasks      the Celery task: retries and requeues around `screening`
    metrics    Prometheus metrics served by each worker process
    cli        the `alknet-firewall worker` subcommand

Importing this package (or `keys`, `store`, `rows`, `broker`, `app`) never imports torch:
the producer uses them.
"""
