"""The gunicorn app factory of the multi-process tests (`tests.support.chaos_app:make_app()`).

Every worker builds the app from TestingConfig with the test's Redis and MongoDB,
named by CHAOS_* environment variables, and connects to both on first use (MongoDB
with PyMongo through MONGO_URI), as a production worker does.
"""

import os

ENV_MONGO_URI = "CHAOS_MONGO_URI"
ENV_REDIS_URL = "CHAOS_REDIS_URL"
ENV_HOLD_SECONDS = "CHAOS_HOLD_SECONDS"


def settings(mongo_uri, redis_url, hold_seconds, **overrides):
    """TestingConfig as a dict, with the multi-process tests' stores and overrides."""
    from config import TestingConfig

    values = {key: getattr(TestingConfig, key) for key in dir(TestingConfig) if key.isupper()}
    values.update(
        ENV_NAME="testing",
        MONGO_URI=mongo_uri,
        REDIS_URL=redis_url,
        HOLD_SECONDS=hold_seconds,
        SWEEP_GRACE_SECONDS=0,
    )
    values.update(overrides)
    return values


def env(mongo_uri, redis_url, hold_seconds):
    """The CHAOS_* variables that make_app() reads."""
    return {
        ENV_MONGO_URI: mongo_uri,
        ENV_REDIS_URL: redis_url,
        ENV_HOLD_SECONDS: str(hold_seconds),
    }


def close_mongo(app):
    """Close the MongoDB client `app` opened (a test's own app, when it is done)."""
    from flashcart.extensions import stores

    with app.app_context():
        stores.db.client.close()


def make_app():
    """The gunicorn app factory: one per worker, after the fork."""
    from flashcart import create_app

    config = settings(
        os.environ[ENV_MONGO_URI], os.environ[ENV_REDIS_URL], int(os.environ[ENV_HOLD_SECONDS])
    )
    # No clients handed in: each worker connects on first use (stores connects lazily).
    return create_app(config)
