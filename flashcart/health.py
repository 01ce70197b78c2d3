"""Liveness and readiness probes for load balancers and the container healthcheck."""

import logging

import pymongo.errors
import redis.exceptions
from flask import current_app
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from flashcart import metrics
from flashcart.apidoc import problems
from flashcart.errors import ServiceUnavailable
from flashcart.extensions import stores

log = logging.getLogger(__name__)

blp = Blueprint("health", __name__, description="Probes.")


class RedisUnavailable(ServiceUnavailable):
    """The live inventory store (Redis) did not answer in time."""

    code = "redis_unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    """The database (MongoDB) did not answer in time."""

    code = "database_unavailable"


class HealthOut(Schema):
    status = fields.String(required=True, metadata={"enum": ["ok"]})


class ReadyOut(Schema):
    status = fields.String(required=True, metadata={"enum": ["ready"]})


@blp.route("/healthz", methods=["GET"])
@blp.response(200, HealthOut)
def healthz():
    """The process is alive (checks no dependency)."""
    return {"status": "ok"}


def init_app(app):
    """Serve what /readyz checks as a gauge, so Prometheus sees a store go away."""
    metrics.register_gauge(
        app,
        "flashcart_store_up",
        "1 when the store (redis, mongodb) answered a ping within READY_TIMEOUT_SECONDS.",
        "store",
        stores_up,
    )


def stores_up():
    """{"redis": 1 or 0, "mongodb": 1 or 0}: each store pinged as /readyz pings it."""
    timeout = current_app.config["READY_TIMEOUT_SECONDS"]
    up = {}
    for store, ping, errors in (
        ("redis", stores.ping_redis, redis.exceptions.RedisError),
        ("mongodb", stores.ping_mongo, pymongo.errors.PyMongoError),
    ):
        try:
            ping(timeout)
            up[store] = 1
        except errors as error:
            log.warning("metrics: %s is down: %s", store, error)
            up[store] = 0
    return up


@blp.route("/readyz", methods=["GET"])
@blp.response(200, ReadyOut)
@problems(RedisUnavailable, DatabaseUnavailable)
def readyz():
    """MongoDB and Redis both answer within READY_TIMEOUT_SECONDS; 503 otherwise."""
    timeout = current_app.config["READY_TIMEOUT_SECONDS"]
    try:
        stores.ping_redis(timeout)
    except redis.exceptions.RedisError as error:
        log.warning("not ready: redis: %s", error)
        raise RedisUnavailable() from None
    try:
        stores.ping_mongo(timeout)
    except pymongo.errors.PyMongoError as error:
        log.warning("not ready: mongodb: %s", error)
        raise DatabaseUnavailable() from None
    return {"status": "ready"}
