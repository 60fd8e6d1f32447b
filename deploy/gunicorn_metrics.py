"""gunicorn hooks for Prometheus metrics across workers (see app/metrics.py).

Use it as (or from) the gunicorn configuration, with PROMETHEUS_MULTIPROC_DIR set in the
environment of the gunicorn command (it must be set before any worker imports the app):

    PROMETHEUS_MULTIPROC_DIR=/run/switchboard/metrics gunicorn -c deploy/gunicorn_metrics.py 'wsgi:app'

or, in another configuration module: `from deploy.gunicorn_metrics import child_exit, on_starting`.

- `on_starting` empties the directory when the server starts, so an earlier run's counts are not
  added to this one's;
- `child_exit` marks an exited worker dead: its counters stay in the sums (a restarted worker
  loses nothing), its live gauges go.
"""

from app.metrics import child_exit, on_starting

__all__ = ["child_exit", "on_starting"]
