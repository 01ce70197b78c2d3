"""Slow and vanishing clients: nginx (deploy/nginx/) in front of gunicorn's workers.

A gunicorn thread serves one connection at a time: a client that sends half a
request, or never reads its answer, holds it until a timeout, and a few hundred of
them stall a drop. Here the production gunicorn (gunicorn.conf.py: two workers of
four threads, `wsgi:app` in production mode) runs on
the suite's redis-server and a MongoDB (MONGO_TEST_URI's, else tests/support/mongo_standin.py),
behind Debian's nginx running
the repository's config. While hundreds of such clients hang on nginx, shoppers
reserve through it as usual; the same clients sent straight to gunicorn stall every
reservation. A client's own X-Forwarded-For never becomes its address in the app,
which keys rate limits on it. The figures are printed (`pytest -s`).
"""

import concurrent.futures
import contextlib
import http.client
import json
import os
import signal
import socket
import statistics
import time
import urllib.request

import pytest
import redis

from flashcart import create_app
from flashcart.auth import service as accounts
from tests.support import chaos_app, compose
from tests.support import nginx as proxy
from tests.support.gunicorn_hosts import Api, ProductionGunicorn
from tests.support.html_page import PageReferences
from tests.support.mongo import fresh_mongo_uri
from tests.support.processes import children, wait_for
from tests.support.threads import run_threads

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ADMIN = {"email": "admin@slow.example", "password": "correct horse battery staple"}
PASSWORD = "correct horse battery"
SHOPPERS = 12
ROUNDS = 3  # reservations per shopper through nginx
SLOW_PER_KIND = 100  # connections of each kind: 400 in all
SIGNUP_LIMIT = 20  # RATELIMIT_SIGNUP_PER_IP's default, "20 per hour"
# A reservation answered within this is going through; a stalled one waits until the
# slow clients holding gunicorn's threads go.
CLIENT_TIMEOUT = 10
# nginx's client_header_timeout (10 s), with room.
NGINX_DROPS_WITHIN = 20

RESERVE = "/api/v1/sales/reserve/{}"
SIGNUP = "/api/v1/auth/signup"
LOGIN = "/api/v1/auth/login"

# Compose's `api` and `logins` services' own settings (behind nginx, its workers ...).
API_ENV = compose.service_settings("api")
LOGINS_ENV = compose.service_settings("logins")


def _forged(index):
    return f"203.0.113.{index % 250 + 1}"  # TEST-NET-3: no client has it


# -- the servers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def mongo_uri():
    with fresh_mongo_uri() as uri:
        yield uri


def _production_gunicorn(redis_url, mongo_uri, workdir, env):
    return ProductionGunicorn(
        redis_url,
        mongo_uri,
        workdir / "gunicorn.log",
        {
            "PROMETHEUS_MULTIPROC_DIR": str(workdir),
            "JWT_SECRET_KEY": "slow-clients-secret-" + "x" * 40,
            **env,
        },
    )


@pytest.fixture(scope="module")
def gunicorn(redis_server, mongo_uri, tmp_path_factory):
    """The production gunicorn (gunicorn.conf.py) on a free loopback port, compose's
    `api`; yields (port, path of its log)."""
    if redis_server is None:
        pytest.skip("needs a real redis-server")
    store = redis.Redis.from_url(redis_server.url)
    store.flushdb()
    workdir = tmp_path_factory.mktemp("gunicorn")
    try:
        with _production_gunicorn(redis_server.url, mongo_uri, workdir, API_ENV) as server:
            yield server.port, server.log_path
    finally:
        # The login limits these tests spent (per address: every test's is 127.0.0.1).
        store.flushdb()
        store.close()


@pytest.fixture(scope="module")
def logins_gunicorn(gunicorn, redis_server, mongo_uri, tmp_path_factory):
    """Compose's `logins`: the same, with its settings; yields (server, path of its log)."""
    workdir = tmp_path_factory.mktemp("logins")
    with _production_gunicorn(redis_server.url, mongo_uri, workdir, LOGINS_ENV) as server:
        yield server, server.log_path


@pytest.fixture(scope="module")
def nginx(gunicorn, logins_gunicorn):
    """Debian's nginx, in the foreground, running deploy/nginx/ in front of the two;
    yields its port."""
    if not proxy.installed():
        pytest.skip("needs nginx (apt-get install nginx; .ci/run installs it)")
    api = f"127.0.0.1:{gunicorn[0]}"
    with proxy.Nginx(api, f"127.0.0.1:{logins_gunicorn[0].port}") as server:
        yield server.port


@pytest.fixture(scope="module")
def drop(nginx, redis_server, mongo_uri):
    """The admin (made as `flask init` makes it), then through nginx: the admin opens a
    sale and SHOPPERS shoppers sign up (each forging another X-Forwarded-For) and log
    in. Returns (product id, shoppers' tokens)."""
    operator = create_app(chaos_app.settings(mongo_uri, redis_server.url, 600))
    with operator.app_context():
        accounts.ensure_admin(**ADMIN)
    chaos_app.close_mongo(operator)
    api = Api(nginx, timeout=CLIENT_TIMEOUT)
    status, tokens, _ = api.call("POST", "/api/v1/auth/login", body=ADMIN)
    assert status == 200, tokens
    admin = tokens["access_token"]
    product = {"name": "Slow drop", "price": "25.00", "stock": 1000, "per_user_limit": 5}
    status, created, _ = api.call("POST", "/api/v1/products", admin, product)
    assert status == 201, created
    status, started, _ = api.call("POST", f"/api/v1/sales/start/{created['id']}", admin)
    assert status == 200, started
    shoppers = []
    for n in range(SHOPPERS):
        account = {"email": f"shopper{n}@slow.example", "password": PASSWORD, "name": f"S{n}"}
        forged = {"X-Forwarded-For": _forged(n)}
        status, body, _ = api.call("POST", SIGNUP, body=account, headers=forged)
        assert status == 201, body
        login = {"email": account["email"], "password": PASSWORD}
        status, body, _ = api.call("POST", "/api/v1/auth/login", body=login)
        assert status == 200, body
        shoppers.append(body["access_token"])
    return created["id"], shoppers


# -- slow clients --------------------------------------------------------------------


def _silent(sock, product_id):
    """Connects and says nothing."""


def _half_headers(sock, product_id):
    sock.sendall(f"POST {RESERVE.format(product_id)} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())


def _half_body(sock, product_id):
    head = (
        f"POST {SIGNUP} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    )
    sock.sendall(head.encode() + b'{"email": ')


def _never_reads(sock, product_id):
    """Asks for the 110 kB OpenAPI document and neither reads it nor closes: the thread
    writing the answer waits until the client reads or goes."""
    sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")


SLOW_KINDS = (_silent, _half_headers, _half_body, _never_reads)


@contextlib.contextmanager
def slow_clients(port, product_id, per_kind=SLOW_PER_KIND):
    """`per_kind` connections of each slow kind to `port`, open until the block ends,
    each from an address of its own (127.1.x.y: nginx's ceiling is per address);
    yields {kind name: its sockets}."""
    opened = {kind.__name__.strip("_"): [] for kind in SLOW_KINDS}
    addresses = (f"127.1.{n // 250}.{n % 250 + 1}" for n in range(per_kind * len(SLOW_KINDS)))
    try:
        for _ in range(per_kind):
            for kind in SLOW_KINDS:
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.settimeout(5)
                sock.bind((next(addresses), 0))
                sock.connect(("127.0.0.1", port))
                kind(sock, product_id)
                opened[kind.__name__.strip("_")].append(sock)
        yield opened
    finally:
        for socks in opened.values():
            for sock in socks:
                sock.close()


def closed_by_peer(sock):
    """Whether the other end has closed this connection (what it sent is discarded)."""
    sock.setblocking(False)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


def reserve_together(port, product_id, tokens, rounds):
    """Each token reserves one unit `rounds` times, all shoppers at once; returns every
    attempt's (status, seconds)."""
    api = Api(port, timeout=CLIENT_TIMEOUT)

    def shopper(index):
        attempts = []
        for _ in range(rounds):
            started = time.perf_counter()
            status, _, _ = api.call("POST", RESERVE.format(product_id), tokens[index])
            attempts.append((status, time.perf_counter() - started))
        return attempts

    return [attempt for attempts in run_threads(len(tokens), shopper, 90) for attempt in attempts]


def _ms(seconds):
    return round(seconds * 1000)


# -- the tests -----------------------------------------------------------------------


def test_reservations_go_through_while_hundreds_of_slow_clients_hang_on_nginx(nginx, drop):
    product_id, tokens = drop
    with slow_clients(nginx, product_id) as hanging:
        started = time.perf_counter()
        attempts = reserve_together(nginx, product_id, tokens, ROUNDS)
        took = time.perf_counter() - started
        still_open = sum(not closed_by_peer(s) for socks in hanging.values() for s in socks)
        latencies = sorted(seconds for _, seconds in attempts)
        print(
            f"\nthrough nginx, {len(SLOW_KINDS) * SLOW_PER_KIND} slow clients "
            f"({still_open} still connected after): {len(attempts)} reservations in {took:.1f} s, "
            f"median {_ms(statistics.median(latencies))} ms, max {_ms(latencies[-1])} ms"
        )
        assert [status for status, _ in attempts] == [201] * SHOPPERS * ROUNDS
        assert still_open == len(SLOW_KINDS) * SLOW_PER_KIND  # the load lasted throughout

        # And nginx lets go of the ones that went silent.
        silent = hanging["silent"] + hanging["half_headers"] + hanging["half_body"]
        wait_for(
            lambda: all(closed_by_peer(sock) for sock in silent),
            "nginx dropping silent clients",
            timeout=NGINX_DROPS_WITHIN,
            interval=0.5,
        )


def test_the_same_slow_clients_straight_to_gunicorn_stall_reservations(gunicorn, drop):
    port, _ = gunicorn
    product_id, tokens = drop
    with slow_clients(port, product_id):
        attempts = reserve_together(port, product_id, tokens[:4], rounds=1)
        print(f"\nstraight to gunicorn: {attempts}")
        # Not one answered: every thread is held by a slow client.
        assert [status for status, _ in attempts] == [None] * 4
    # Not a broken server: once the slow clients are gone, it answers again.
    wait_for(lambda: Api(port, timeout=1).call("GET", "/healthz")[0] == 200, "gunicorn again", 30)


def _access_log(log_path):
    """(path, client address) of each request in a gunicorn log, in order."""
    seen = []
    with open(log_path, errors="replace") as log:
        for line in log:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("logger") == "flashcart.access":
                    seen.append((record["path"], record["remote_addr"]))
    return seen


def test_a_forged_x_forwarded_for_is_not_the_clients_address_behind_nginx(
    nginx, gunicorn, logins_gunicorn, drop
):
    """The shoppers' sign-ups (in `drop`) came from one address, each forging another:
    nginx's address is the one that counts, so that address reaches the limit."""
    api = Api(nginx, timeout=CLIENT_TIMEOUT)
    answers = []
    for n in range(SHOPPERS, SIGNUP_LIMIT + 1):
        account = {"email": f"forger{n}@slow.example", "password": PASSWORD, "name": "F"}
        forged = {"X-Forwarded-For": _forged(n)}
        status, _, code = api.call("POST", SIGNUP, body=account, headers=forged)
        answers.append((status, code))
    assert answers == [(201, "")] * (SIGNUP_LIMIT - SHOPPERS) + [(429, "too_many_requests")]

    # Straight to gunicorn (which trusts one proxy) the same header would be believed:
    # the proxy in front is what makes TRUSTED_PROXIES=1 safe.
    straight = Api(gunicorn[0], timeout=CLIENT_TIMEOUT)
    account = {"email": "direct@slow.example", "password": PASSWORD, "name": "D"}
    status, _, _ = straight.call(
        "POST", SIGNUP, body=account, headers={"X-Forwarded-For": "198.51.100.7"}
    )
    assert status == 201

    through_nginx = {addr for path, addr in _access_log(logins_gunicorn[1]) if path == SIGNUP}
    straight_in = {addr for path, addr in _access_log(gunicorn[1]) if path == SIGNUP}
    assert through_nginx == {"127.0.0.1"}
    assert "198.51.100.7" in straight_in and not any(a.startswith("203.") for a in straight_in)


def test_logins_and_signups_go_to_workers_of_their_own_and_the_rest_to_the_api(
    nginx, gunicorn, logins_gunicorn, drop
):
    product_id, tokens = drop
    api = Api(nginx, timeout=CLIENT_TIMEOUT)
    status, _, _ = api.call("POST", RESERVE.format(product_id), tokens[4])
    assert status == 201

    # (Each also answered its readiness probe, /readyz, straight.)
    to_logins = {path for path, _ in _access_log(logins_gunicorn[1]) if path.startswith("/api/")}
    to_api = {path for path, _ in _access_log(gunicorn[1]) if path.startswith("/api/")}
    assert to_logins == {LOGIN, SIGNUP}
    assert RESERVE.format(product_id) in to_api
    assert not to_api & {LOGIN}


def test_reservations_go_through_while_every_login_worker_is_stuck(nginx, logins_gunicorn, drop):
    """The logins' workers stopped dead (as if each were deep in a password check): a
    storm of logins waits for them, and reservations are answered as before."""
    product_id, tokens = drop
    server = logins_gunicorn[0]
    stuck = [server.process.pid, *children(server.process.pid)]
    api = Api(nginx, timeout=CLIENT_TIMEOUT)
    login = {"email": "shopper0@slow.example", "password": PASSWORD}
    try:
        for pid in stuck:
            os.kill(pid, signal.SIGSTOP)
        with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
            waiting = [pool.submit(api.call, "POST", LOGIN, None, login) for _ in range(32)]
            attempts = reserve_together(nginx, product_id, tokens[5:9], rounds=1)
            # Long enough for any of them to be answered, had it reached another worker.
            time.sleep(1)
            answered_while_stuck = sum(future.done() for future in waiting)
            for pid in stuck:
                os.kill(pid, signal.SIGCONT)
            logins = [future.result()[0] for future in waiting]
    finally:
        for pid in stuck:
            os.kill(pid, signal.SIGCONT)
    latencies = sorted(seconds for _, seconds in attempts)
    print(f"\nlogin workers stopped: reservations max {_ms(latencies[-1])} ms; logins {logins}")
    assert answered_while_stuck == 0
    assert [status for status, _ in attempts] == [201] * 4
    assert latencies[-1] < 2
    # Once the workers go on, every waiting login is answered: checked, or refused
    # by the login limits (never dropped by nginx).
    assert set(logins) <= {200, 429, 503} and 200 in logins


def test_nginx_refuses_a_body_over_the_apps_limit_in_the_problem_shape(nginx):
    api = Api(nginx, timeout=CLIENT_TIMEOUT)
    status, body, code = api.call("POST", SIGNUP, body={"name": "x" * (64 * 1024)})
    assert (status, code, body["status"]) == (413, "payload_too_large", 413)


def _fetch(port, path):
    url = f"http://127.0.0.1:{port}{path}"
    with urllib.request.urlopen(url, timeout=CLIENT_TIMEOUT) as response:  # noqa: S310 - loopback
        return response.status, response.headers.get_content_type(), response.read()


def test_the_docs_page_and_its_files_come_through_nginx_as_the_app_serves_them(nginx, gunicorn):
    status, content_type, html = _fetch(nginx, "/docs")
    assert (status, content_type) == (200, "text/html")
    paths = ["/docs", *PageReferences(html.decode()).urls]
    assert any(path.endswith("/swagger-ui-bundle.js") for path in paths)  # 1 MB, buffered

    for path in paths:
        assert _fetch(nginx, path) == _fetch(gunicorn[0], path), path


def test_metrics_are_for_prometheus_on_gunicorns_port_not_for_clients_through_nginx(
    nginx, gunicorn
):
    status, body, code = Api(nginx, timeout=CLIENT_TIMEOUT).call("GET", "/metrics")
    assert (status, code, body["status"]) == (404, "not_found", 404)
    conn = http.client.HTTPConnection("127.0.0.1", gunicorn[0], timeout=CLIENT_TIMEOUT)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        assert response.status == 200
        assert b"flashcart_http_requests_total" in response.read()
    finally:
        conn.close()
