"""gunicorn settings for production (`gunicorn wsgi:app` picks this file up).

Two threaded workers of four threads each that keep connections alive: on a 2-core
box they served more than four sync workers in nearly every trial, directly and
behind nginx (typically a fifth to two fifths more), at a higher p99 (see
docs/performance.md and docs/decisions/0009). Scale with WEB_CONCURRENCY on bigger
hosts (about one per core) and with more hosts behind the load balancer.
"""

import glob
import os
import shutil
import tempfile

# gunicorn means production: the app then refuses in-memory backends and weak secrets.
os.environ.setdefault("FLASHCART_ENV", "production")

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Requests each worker serves at once, on threads (gthread) that keep connections
# alive: no TCP handshake, accept and close per request, on either side, and a
# reservation's Redis round trips wait while another thread runs. 1 means sync
# workers, which close every connection (the `logins` service keeps them).
threads = int(os.environ.get("WEB_THREADS", "4"))
worker_class = "gthread" if threads > 1 else "sync"
# The app is loaded once, in the master, and forked into each worker: a worker killed
# or recycled mid-drop is back at once, without the ~0.5 s of CPU loading it costs.
# (Building the app opens no connection, so none crosses the fork; a code change needs
# a restart, not a HUP.)
preload_app = True
# A worker silent this long is killed. A gthread worker's threads are not watched: the
# app bounds each request by the same variable itself (flashcart/deadlines.py).
timeout = int(os.environ.get("REQUEST_TIMEOUT_SECONDS") or "30")
graceful_timeout = 20
# An idle kept-alive connection is closed after this (nginx closes its own sooner).
keepalive = 5
# Recycle workers now and then so a slow leak can never take a drop down: rarely,
# and spread out. Workers start together and share the load evenly, so a narrow
# jitter had them all restart within seconds of one another. At 500 requests/s
# (sold-out answers) a worker now goes every 200-300 s.
max_requests = 100000
max_requests_jitter = 50000
# No control socket: it would be a thread in the master and a path under $HOME shared
# by every gunicorn of the user (the image's user has no home); signals do its job.
control_socket_disable = True
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")

# Prometheus multiprocess mode (docs/monitoring.md): every worker writes its
# metrics to files in this folder and /metrics adds them up. By default a fresh
# folder for each server start, so nothing an earlier run left is counted again. It
# must exist now, while gunicorn reads this file: preload_app imports the app, whose
# metrics open their files there, before any server hook runs.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="flashcart-prometheus-")
    _made_prometheus_dir = True
prometheus_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
os.makedirs(prometheus_dir, exist_ok=True)


def on_starting(server):
    # A folder named by the operator may hold files of an earlier run. (This runs after
    # the preload: the master's own files, never written to, go too.)
    for path in glob.glob(os.path.join(prometheus_dir, "*.db")):
        os.remove(path)


def on_exit(server):
    if globals().get("_made_prometheus_dir"):
        shutil.rmtree(prometheus_dir, ignore_errors=True)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    # On the embedded in-memory stores (`make run`) the worker also runs the sweeper
    # and the webhook deliverer, in threads: started here, since threads started in the
    # master would not survive the fork. A no-op on real stores.
    from flashcart.bootstrap import start_embedded_workers

    start_embedded_workers(worker.wsgi)
