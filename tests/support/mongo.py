"""MongoDB that several processes can share: MONGO_TEST_URI's server, else the stand-in.

MONGO_TEST_URI names a MongoDB server for the suite; each user of it gets a database of
its own. Without it, the wire-protocol stand-in (tests/support/mongo_standin.py) serves.
"""

import contextlib
import os
from urllib.parse import urlsplit, urlunsplit

from config import TestingConfig
from flashcart.stores import connect_mongo
from tests.support.mongo_standin import MongoStandIn

MONGO_TEST_URI = os.environ.get("MONGO_TEST_URI", "")


def fresh_database_uri():
    """MONGO_TEST_URI with a database name of its own, so no two tests share data."""
    name = f"flashcart_test_{os.urandom(6).hex()}"
    return urlunsplit(urlsplit(MONGO_TEST_URI)._replace(path="/" + name))


@contextlib.contextmanager
def fresh_mongo_uri():
    """The URI of an empty database on a MongoDB server that several processes can
    share: MONGO_TEST_URI's (the database dropped after), else a stand-in started
    for the caller (stopped after)."""
    with fresh_mongo() as (uri, _standin):
        yield uri


@contextlib.contextmanager
def fresh_mongo():
    """fresh_mongo_uri()'s URI and the stand-in serving it (None on MONGO_TEST_URI's
    server), which a test may freeze and thaw."""
    if not MONGO_TEST_URI:
        with MongoStandIn() as standin:
            yield standin.url, standin
        return
    uri = fresh_database_uri()
    try:
        yield uri, None
    finally:
        db = connect_mongo(uri, TestingConfig.MONGO_TIMEOUT_MS)
        db.client.drop_database(db.name)
        db.client.close()


@contextlib.contextmanager
def fresh_server_database():
    """fresh_mongo_uri()'s database, opened by the app's own connect_mongo."""
    with fresh_mongo_uri() as uri:
        db = connect_mongo(uri, TestingConfig.MONGO_TIMEOUT_MS)
        try:
            yield db
        finally:
            db.client.close()
