"""gunicorn settings of the production recipe (`make serve`, deploy/serve.py): sync workers behind
nginx (deploy/nginx.conf.template), which hands them only whole requests.

deploy/serve.py adds `--bind unix:<run dir>/gunicorn.sock`: only nginx talks to the workers.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, for the hooks below

# Prometheus metrics across workers (app/metrics.py): with PROMETHEUS_MULTIPROC_DIR set (serve.py
# sets a private one), `on_starting` empties it at start and `child_exit` marks an exited worker
# dead, so every scrape shows the sums of all workers, restarted ones included.
from app.metrics import child_exit, on_starting  # noqa: F401  (gunicorn reads hooks by name)

wsgi_app = "wsgi:app"
worker_class = "sync"
# One request at a time per worker; nginx keeps the slow clients away from them.
workers = int(os.environ.get("WEB_CONCURRENCY") or 4)
timeout = 30
graceful_timeout = 20
# No access log, as before nginx was in front (its lines would bypass the app's log masking);
# the app's own log and nginx's errors go to stderr.
accesslog = None
errorlog = "-"
loglevel = "info"
# No gunicornc control socket: its default path ($HOME/.gunicorn/gunicorn.ctl) is one per user,
# shared by every gunicorn that user runs.
control_socket_disable = True
