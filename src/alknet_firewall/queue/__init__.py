"""The queue contract: what producer and worker share, and all they share.

`producer/` and `worker/` import this package and never each other; nothing in the
detector (model, windows, features, codebook, scoring, firewall) imports it. Nothing
here imports torch. Modules, one idea each:

    settings  the [queue] table of config.toml (broker, results, worker, producer)
    keys      every Redis key name, job hash field and TTL
    message   the task names and the typed chunk message (`ScreenChunk`), packing
    broker    Kombu transport and TLS options, the queue-length probe
    app       the Celery app both sides build from settings (JSON only, late acks);
              sending chunks
    store     the results backend: idempotent row writes, forward passes begun per
              chunk, the jobs' outboxes, verdict cache
    jobs      a job's bookkeeping: documents in input order, counters, progress, rows
    redrive   finding stalled jobs and sending their lost chunks again
"""
