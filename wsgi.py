"""The entry point of `make run` (gunicorn wsgi:app), `make dev` and `flask --app wsgi`."""

from werkzeug.serving import is_running_from_reloader

from flashcart import create_app
from flashcart.bootstrap import seed_embedded_demo, start_embedded_workers

app = create_app()
# Only on the embedded in-memory stores (and never under test): real ones are untouched.
seed_embedded_demo(app)
# `make dev` (flask run --reload) serves from the reloader's child: its sweeper and
# webhook deliverer start here. gunicorn starts them in its worker (gunicorn.conf.py);
# other `flask` commands start none.
if is_running_from_reloader():
    start_embedded_workers(app)
