"""The producer side: enqueue documents, follow a job, export its rows. Never imports torch.

What it shares with the worker (keys, message, app, result store, job book) is
`alknet_firewall.queue`; this package never imports `worker`. Modules:

    enqueue   stream an input into the queue in pipelined chunks, with backpressure
    status    `alknet-firewall status`: progress, docs/s, a progress bar with --follow
    export    `alknet-firewall results`: one row per document, JSONL or CSV
    cli       the subcommands, registered on the main `alknet-firewall` parser
"""
