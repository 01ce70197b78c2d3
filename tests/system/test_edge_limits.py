"""Each client address's ceiling over the whole API is counted at the edge: nginx
(deploy/nginx/, with compose's rate and burst) in front of the production gunicorn,
whose own per-address ceiling (RATELIMIT_GLOBAL) is off by default. Clients come
from addresses of their own on the loopback network (127.0.0.x)."""

import concurrent.futures
import http.client
import json

import pytest
import redis

from tests.support import compose
from tests.support import nginx as proxy
from tests.support.gunicorn_hosts import ProductionGunicorn
from tests.support.mongo import fresh_mongo_uri

pytestmark = pytest.mark.timeout(120)

PRODUCTS = "/api/v1/products"


@pytest.fixture(scope="module")
def edge(redis_server, tmp_path_factory):
    """nginx, as compose runs it, in front of the production gunicorn with compose's
    `api` settings; yields (nginx's port, a client of the app's Redis)."""
    if redis_server is None:
        pytest.skip("needs a real redis-server")
    if not proxy.installed():
        pytest.skip("needs nginx (apt-get install nginx; .ci/run installs it)")
    store = redis.Redis.from_url(redis_server.url)
    store.flushdb()
    log = tmp_path_factory.mktemp("edge") / "gunicorn.log"
    env = compose.service_settings("api")
    with (
        fresh_mongo_uri() as mongo_uri,
        ProductionGunicorn(redis_server.url, mongo_uri, log, env) as app,
        proxy.Nginx(f"127.0.0.1:{app.port}") as nginx,
    ):
        yield nginx.port, store
    store.flushdb()
    store.close()


def get(port, path, address):
    """(status, headers, body) of GET `path` through nginx, sent from `address`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(address, 0))
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        conn.close()


def test_an_address_past_its_burst_is_refused_at_the_edge_and_others_are_served(edge):
    port, store = edge
    rate, burst = proxy.SHIPPED_CEILING
    assert rate.endswith("r/s")
    burst = int(burst)
    sent = burst + 150
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: get(port, PRODUCTS, "127.0.0.2"), range(sent)))

    served = [answer for answer in answers if answer[0] == 200]
    refused = [answer for answer in answers if answer[0] != 200]
    assert len(served) + len(refused) == sent
    # The burst at once, and the rate's trickle while the rest were being sent.
    assert burst <= len(served) < sent - 50, len(served)
    status, headers, body = refused[0]
    assert status == 429
    assert headers["Content-Type"] == "application/problem+json"
    assert headers["Retry-After"] == "1"
    assert body["code"] == "too_many_requests"
    assert {answer[0] for answer in refused} == {429}

    # Another address has a ceiling of its own.
    assert get(port, PRODUCTS, "127.0.0.3")[0] == 200
    # And the app counted no ceiling of its own for any of them.
    assert not store.keys("LIMITS:*")
