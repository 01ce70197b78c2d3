"""Liveness and readiness probes for load balancers and the container healthcheck."""

import logging

import pymongo.errors
import redis.exceptions
from flask import current_app
from flask_smorest import Blueprint
from marshmallow import Schema, fields

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
