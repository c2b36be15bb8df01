"""The producer side: enqueue documents, follow a job, export its rows. Never imports torch.

enqueue   stream an input into the queue in pipelined chunks, with backpressure
jobs      a job's bookkeeping in Redis: documents, counters, progress, rows
status    `alknet-firewall status`: progress, docs/s, a progress bar with --follow
export    `alknet-firewall results`: one row per document, JSONL or CSV
cli       the subcommands, registered on the main `alknet-firewall` parser
"""
