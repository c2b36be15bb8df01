"""The batch-screening worker: a Celery app that micro-batches chunks of documents from Redis.

`celery -A alknet_firewall_worker worker` finds the app in `alknet_firewall_worker.celery`;
`alknet-firewall worker` starts the same app from config.toml. The package lives in the
top-level worker/ folder and is installed under this project's name, never as a generic
`worker` that another distribution could shadow. What the worker shares with the
producer (keys, message, app, result store) is `alknet_firewall.queue`; this package never
imports the producer's.
Modules, one idea each:

    celery     the module-level app that `celery -A alknet_firewall_worker` and Flower load
    batching   the micro-batcher: token budget or max wait, failure isolation, watchdog
    screening  what happens to one delivered chunk (look up, split, give up, batch, store)
    heartbeat  vouching for the messages this process holds; the periodic loops
    runtime    the per-process state, built once when the worker starts (model loaded here)
    tasks      the Celery tasks: requeues around `screening`
    metrics    Prometheus metrics served by each worker process
    cli        the `alknet-firewall worker` subcommand
"""
