"""Container health check of a worker: does its Prometheus endpoint answer?

The worker opens `[queue.worker].metrics_port` only after the model and codebook are
loaded, so an answer means "started and not wedged in start-up". The port comes from the
same settings the worker reads (config.toml, ALKNET_* variables). Exit 0 healthy, 1 not.
A worker run with the endpoint off (port 0) has nothing to check and counts as healthy.
"""

from __future__ import annotations

import sys
import urllib.request

from alknet_firewall.config import load_settings

TIMEOUT_S = 4.0


def main() -> int:
    port = load_settings().queue.worker.metrics_port
    if port == 0:
        return 0
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT_S) as r:
            return 0 if r.status == 200 else 1
    except OSError as exc:
        print(f"worker metrics endpoint on :{port} does not answer: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
