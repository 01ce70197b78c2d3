"""The floor: a bare Flask JSON endpoint on 4 sync gunicorn workers, the yardstick
`make bench` measures every HTTP scenario against.

What the framework and the server cost before any of FlashCart's work: one route, no
hooks, no extensions, gunicorn's defaults but for the worker count and class. It
stays as it is whatever FlashCart ships (its worker model included), so ratios
against it compare across runs and changes. gunicorn reads this module's settings
(`--config python:bench.floor`) and serves `bench.floor:app`.
"""

from flask import Flask

# gunicorn settings: 4 sync workers, nothing else changed.
workers = 4
worker_class = "sync"

app = Flask(__name__, static_folder=None)  # one route: no static files


@app.get("/")
def floor():
    return {"status": "ok"}
