"""The reference app as a plain ASGI object, for servers other than ours.

    gunicorn reference.asgi:app -k uvicorn.workers.UvicornWorker -w 2
    uvicorn reference.asgi:app --workers 2

Settings come from the environment (DATABASE_URL, CLUSTERPROOF_...), as for
`python -m reference`. Every process these servers start serves HTTP and
does nothing else: no migrations, no cron, no webhook delivery (the duties of
one of our cluster workers), so the schema must be at head before they start.
"""

from __future__ import annotations

from reference.app import build_app
from reference.config import load_settings, worker_child_duties

_settings = load_settings()
app = build_app(_settings, worker_child_duties(_settings.server.role))
