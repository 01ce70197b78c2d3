"""Liveness and readiness probes for load balancers and the container healthcheck."""

from flask_smorest import Blueprint

from flashcart.extensions import stores

blp = Blueprint("health", __name__, description="Probes.")


@blp.route("/healthz", methods=["GET"])
@blp.response(200)
def healthz():
    """The process is alive (checks no dependency)."""
    return {"status": "ok"}


@blp.route("/readyz", methods=["GET"])
@blp.response(200)
def readyz():
    """MongoDB and Redis answer; 503 otherwise."""
    stores.redis.ping()
    stores.db.command("ping")
    return {"status": "ready"}
