"""gunicorn settings for production (`gunicorn wsgi:app` picks this file up).

Sync workers: the hot path is short Redis round trips, and on a 2-core box four
sync workers measured best (see README "Performance"). Scale with WEB_CONCURRENCY
on bigger hosts (about 2 x cores) and with more hosts behind the load balancer.
"""

import os

# gunicorn means production: the app then refuses in-memory backends and weak secrets.
os.environ.setdefault("FLASHCART_ENV", "production")

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
worker_class = "sync"
timeout = 30
graceful_timeout = 20
keepalive = 5
# Recycle workers now and then so a slow leak can never take a drop down.
max_requests = 20000
max_requests_jitter = 2000
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
