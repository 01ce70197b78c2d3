"""The app as gunicorn serves it in production, for the benchmark.

Production settings throughout, except MongoDB: the benchmark may use the in-memory
one because the hot paths it measures (reserve, stock, cached product) never touch
MongoDB. Each worker has its own (empty) mongomock, so anything that would reach
MongoDB fails loudly instead of being measured.
"""

from config import MEMORY_URI, ProductionConfig
from flashcart import create_app


class BenchConfig(ProductionConfig):
    MONGO_URI = MEMORY_URI

    @classmethod
    def check(cls):
        secret_ok = len(cls.JWT_SECRET_KEY or "") >= 32
        if cls.REDIS_URL == MEMORY_URI or not secret_ok:
            raise RuntimeError("the benchmark needs REDIS_URL and a JWT secret")


def create(**overrides):
    """The app (gunicorn: `bench.app:create()`); `overrides` replace settings."""
    config = type("BenchConfig", (BenchConfig,), overrides) if overrides else BenchConfig
    return create_app(config)
