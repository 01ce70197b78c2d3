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


# Every benchmark account's password (bench/logins.py logs in with it).
ACCOUNT_PASSWORD = "bench-shopper-password"  # noqa: S105  # nosec B105 - a benchmark input


class _UsersByEmail:
    """The users collection, looked up by email from a dict, as MongoDB looks it up
    in its unique index: mongomock scans every document instead (13 ms for 10,000,
    more than half a password check). Any write through it turns the dict off."""

    def __init__(self, collection):
        self._collection = collection
        self._by_email = None

    def index(self):
        self._by_email = {doc["email"]: doc for doc in self._collection.find()}

    def find_one(self, filter=None, *args, **kwargs):  # noqa: A002 - pymongo's name
        email = filter.get("email") if isinstance(filter, dict) and len(filter) == 1 else None
        if self._by_email is not None and isinstance(email, str) and not args and not kwargs:
            doc = self._by_email.get(email)
            return dict(doc) if doc else None
        return self._collection.find_one(filter, *args, **kwargs)

    def __getattr__(self, name):
        if name.startswith(("insert", "update", "replace", "delete", "find_one_and")):
            self._by_email = None
        return getattr(self._collection, name)


class _Database:
    def __init__(self, db):
        self._db = db
        self.users = _UsersByEmail(db.users)

    def __getitem__(self, name):
        return self.users if name == "users" else self._db[name]

    def __getattr__(self, name):
        return getattr(self._db, name)


def with_accounts(path):
    """The app (gunicorn: `bench.app:with_accounts('file')`) with one account per
    email in `path`, all with ACCOUNT_PASSWORD, hashed with the configured argon2id
    parameters. gunicorn loads the app once and forks it, so every worker starts
    with the same accounts in its in-memory MongoDB.

    They all store one hash (a salt each would cost the same to verify, and 10,000
    hashes take minutes), made as the app makes them, from its ARGON2_* settings.
    """
    import mongomock
    from argon2 import PasswordHasher

    from flashcart.auth.service import USER
    from flashcart.extensions import stores
    from flashcart.stores import utcnow

    with open(path) as lines:
        emails = lines.read().split()
    db = _Database(mongomock.MongoClient().flashcart)
    app = create_app(BenchConfig, db=db)
    config = app.config
    hasher = PasswordHasher(
        time_cost=config["ARGON2_TIME_COST"],
        memory_cost=config["ARGON2_MEMORY_KIB"],
        parallelism=config["ARGON2_PARALLELISM"],
    )
    stored, now = hasher.hash(ACCOUNT_PASSWORD), utcnow()
    # Before the app's indexes: mongomock checks a unique index by scanning, per insert.
    db.users.insert_many(
        [
            {
                "email": email,
                "name": "Shopper",
                "password_hash": stored,
                "role": USER,
                "created_at": now,
                "updated_at": now,
            }
            for email in emails
        ]
    )
    with app.app_context():
        stores.ensure_indexes()
    db.users.index()
    return app
