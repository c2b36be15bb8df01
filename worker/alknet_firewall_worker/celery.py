"""The app that `celery -A alknet_firewall_worker worker` and `... flower` load.

Celery looks for `alknet_firewall_worker.app`, then `alknet_firewall_worker.celery` (this
module). Settings come from config.toml ($ALKNET_CONFIG or ./config.toml) and ALKNET_*
environment variables.

Local run, everything on one machine (Redis on 127.0.0.1:6379):
    celery -A alknet_firewall_worker worker --loglevel INFO       # or: alknet-firewall worker
    celery -A alknet_firewall_worker flower --port=5555           # dashboard at http://127.0.0.1:5555
    alknet-firewall enqueue examples/ --job demo
    alknet-firewall status demo --follow
    curl -s 127.0.0.1:9808/metrics | grep alknet_  # the worker's Prometheus metrics
"""

from __future__ import annotations

from alknet_firewall.config import load_settings
from alknet_firewall_worker.runtime import WorkerApp

app = WorkerApp(load_settings())
