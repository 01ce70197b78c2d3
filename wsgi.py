"""The entry point of `make run` (gunicorn wsgi:app), `make dev` and `flask --app wsgi`."""

from flashcart import create_app
from flashcart.bootstrap import seed_embedded_demo

app = create_app()
# Only on the embedded in-memory stores (and never under test): real ones are untouched.
seed_embedded_demo(app)
