"""The container image and the compose file, checked without a Docker engine.

No Docker engine runs on the test machines, so the image's command is run the way
the image runs it: only the files the Dockerfile copies, in a fresh directory, a
virtualenv with requirements.txt only, the Dockerfile's environment, an unprivileged
user with no home, an empty TMPDIR. docker-compose.yml is validated against the
Compose Specification's schema (tests/schemas/).
"""

import ast
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import jsonschema
import pytest

from tests.support import compose as compose_file
from tests.support.html_page import CONTENT_TYPES, PageReferences
from tests.support.mongo_standin import MongoStandIn
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
IMAGE_UID = 10001  # the Dockerfile's `useradd --uid`
NOGROUP = 65534


def parse_dockerfile(path=ROOT / "Dockerfile"):
    """The instructions this test needs: FROM, ENV, WORKDIR, COPY, RUN, USER, CMD."""
    text = re.sub(r"\\\n", " ", path.read_text())
    image = {"env": {}, "copy": [], "run": [], "workdir": "/", "cmd": None, "user": None}
    image["from"] = None
    for line in text.splitlines():
        instruction, _, rest = line.strip().partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "FROM":
            image["from"] = rest
        elif instruction == "ENV":
            image["env"].update(item.split("=", 1) for item in shlex.split(rest))
        elif instruction == "WORKDIR":
            image["workdir"] = rest
        elif instruction == "COPY":
            *sources, destination = rest.split()
            image["copy"].append((sources, destination))
        elif instruction == "RUN":
            image["run"].append(rest)
        elif instruction == "USER":
            image["user"] = rest
        elif instruction == "CMD":
            image["cmd"] = json.loads(rest)
    return image


def copied_paths(image):
    """Repository paths the image holds, relative to its WORKDIR."""
    paths = []
    for sources, _destination in image["copy"]:
        paths.extend(Path(source) for source in sources)
    return paths


def lay_out_files(image, app_dir):
    """COPY each source as the Dockerfile does (relative destinations, in WORKDIR)."""
    for sources, destination in image["copy"]:
        for source in sources:
            origin = ROOT / source
            if destination.endswith("/") or destination == ".":
                target = app_dir / destination / origin.name
            else:
                target = app_dir / destination
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)


def image_python(image):
    """The system's interpreter of the image's Python version (`FROM python:3.11-slim`):
    one the image's unprivileged user may run, unlike a per-user install (pyenv)."""
    version = re.match(r"python:(\d+\.\d+)", image["from"]).group(1)
    found = shutil.which(f"python{version}", path="/usr/local/bin:/usr/bin")
    assert found, f"the image runs Python {version}: install it (Debian: python{version}-venv)"
    return found


@pytest.fixture(scope="session")
def image_venv():
    """A virtualenv with requirements.txt only, as the image's `pip install` makes it;
    built once per requirements.txt and interpreter, and kept for later runs."""
    python = image_python(parse_dockerfile())
    requirements = (ROOT / "requirements.txt").read_bytes()
    key = hashlib.sha256(requirements + python.encode()).hexdigest()[:16]
    venv = Path(tempfile.gettempdir()) / f"flashcart-image-venv-{key}"
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([python, "-m", "venv", venv], check=True)
            pip = [venv / "bin" / "pip", "install", "--quiet", "--quiet"]
            subprocess.run([*pip, "-r", ROOT / "requirements.txt"], check=True)
            (venv / ".complete").touch()
    return venv


class Image:
    """The image's files in a fresh directory, and its processes, run as its user."""

    def __init__(self, venv, env):
        self.dockerfile = parse_dockerfile()
        self.root = Path(tempfile.mkdtemp(prefix="flashcart-image-"))
        self.root.chmod(0o755)
        self.app_dir = self.root / self.dockerfile["workdir"].lstrip("/")
        self.app_dir.mkdir(parents=True)
        lay_out_files(self.dockerfile, self.app_dir)
        for path in [self.root, *self.root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        tmp = self.root / "tmp"
        tmp.mkdir(mode=0o1777)
        tmp.chmod(0o1777)
        self.env = {
            "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "HOME": "/nonexistent",  # the image's user has no home
            "TMPDIR": str(tmp),
            **self.dockerfile["env"],
            **env,
        }
        self.logs = []

    def start(self, command, name):
        log_path = self.root / f"{name}.log"
        user = {"user": IMAGE_UID, "group": NOGROUP, "extra_groups": []}
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                command,
                cwd=self.app_dir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **(user if os.geteuid() == 0 else {}),
            )
        self.logs.append(log_path)
        return process

    def log_text(self):
        return "\n".join(f"--- {path.name}\n{path.read_text()}" for path in self.logs)

    def remove(self):
        shutil.rmtree(self.root, ignore_errors=True)


def get(url, body=None):
    request = urllib.request.Request(url)  # noqa: S310 - loopback
    if body is not None:
        request.add_header("Content-Type", "application/json")
        body = json.dumps(body).encode()
    try:
        with urllib.request.urlopen(request, body, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_for(condition, what, timeout, image, server):
    """`condition()`'s first true value; fails at once, with the server's log, if the
    server exits, and with it too after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            value = condition()
            if value:
                return value
        if server.poll() is not None:
            raise AssertionError(f"the server exited ({server.returncode}):\n{image.log_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{image.log_text()}")
        time.sleep(0.2)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("admin_configured", [False, True], ids=["plain", "admin configured"])
def test_the_image_starts_without_mongodb_and_becomes_ready_when_it_answers(
    image_venv, redis_server, admin_configured
):
    if redis_server is None:
        pytest.skip("needs a real redis-server")
    mongo = MongoStandIn()  # its port is reserved, nothing answers there yet
    admin = {"ADMIN_EMAIL": "boss@example.com", "ADMIN_PASSWORD": "a long admin passphrase"}
    port = free_port()
    image = Image(
        image_venv,
        {
            "PORT": str(port),
            "MONGO_URI": mongo.url,
            "REDIS_URL": redis_server.url,
            "JWT_SECRET_KEY": secrets.token_urlsafe(48),
            **(admin if admin_configured else {}),
        },
    )
    assert image.env["FLASHCART_ENV"] == "production"
    base = f"http://127.0.0.1:{port}"
    server = image.start(image.dockerfile["cmd"], "server")
    init = None
    try:
        healthz = wait_for(lambda: get(base + "/healthz"), "/healthz", 60, image, server)
        assert healthz == (200, {"status": "ok"})
        status, problem = get(base + "/readyz")
        assert (status, problem["code"]) == (503, "database_unavailable")
        if admin_configured:
            # What compose runs before the API: it waits for MongoDB.
            init = image.start(compose_file.load()["services"]["init"]["command"], "init")
        time.sleep(3)  # a crash loop would show by now
        assert server.poll() is None

        mongo.start()
        assert wait_for(lambda: get(base + "/readyz")[0] == 200, "/readyz 200", 60, image, server)
        assert [get(base + "/readyz")[0] for _ in range(8)] == [200] * 8
        if admin_configured:
            assert init.wait(timeout=60) == 0
            login = {"email": admin["ADMIN_EMAIL"], "password": admin["ADMIN_PASSWORD"]}
            status, session = get(base + "/api/v1/auth/login", login)
            assert (status, session["user"]["role"]) == (200, "admin")
        assert server.poll() is None
    finally:
        for process in (server, init):
            if process and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
        mongo.stop()
        logs = {path.name: path.read_text() for path in image.logs}
        tmpdir = Path(image.env["TMPDIR"])
        left_in_tmpdir = sorted(str(path.relative_to(tmpdir)) for path in tmpdir.rglob("*"))
        image.remove()
    workers = int(image.env.get("WEB_CONCURRENCY", 2))  # gunicorn.conf.py's default
    assert logs["server.log"].count("Booting worker") == workers, logs["server.log"]
    for name, text in logs.items():
        assert "Traceback" not in text, f"{name}:\n{text}"
    # The metrics folder goes with the server. The host's password-check slots stay
    # (lock files every server of the host shares), and nothing else.
    uid = IMAGE_UID if os.geteuid() == 0 else os.getuid()
    slots = re.compile(rf"flashcart-{uid}(/password-checks\.\d+\.lock)?")
    assert [path for path in left_in_tmpdir if not slots.fullmatch(path)] == []


def fetch(url):
    """(status, content type, body bytes) of a GET."""
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
        return response.status, response.headers.get_content_type(), response.read()


@pytest.mark.timeout(300)
def test_the_image_serves_the_docs_page_and_swagger_ui_itself(image_venv, redis_server):
    # The page's template, its start-up script and Swagger UI's files (swagger-ui-bundle,
    # from requirements.txt) are no Python imports: this finds any the image lacks.
    if redis_server is None:
        pytest.skip("needs a real redis-server")
    port = free_port()
    image = Image(
        image_venv,
        {
            "PORT": str(port),
            "WEB_CONCURRENCY": "1",
            "MONGO_URI": MongoStandIn().url,  # not started: /docs needs no database
            "REDIS_URL": redis_server.url,
            "JWT_SECRET_KEY": secrets.token_urlsafe(48),
        },
    )
    base = f"http://127.0.0.1:{port}"
    server = image.start(image.dockerfile["cmd"], "server")
    try:
        wait_for(lambda: get(base + "/healthz")[0] == 200, "/healthz", 60, image, server)
        status, content_type, html = fetch(base + "/docs")
        page = PageReferences(html.decode())
        files = {url: fetch(base + url) for url in page.urls}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        image.remove()

    assert (status, content_type) == (200, "text/html")
    assert any(url.endswith("/swagger-ui-bundle.js") for url in files)
    for url, (status, content_type, body) in files.items():
        assert status == 200, url
        assert content_type in CONTENT_TYPES[url.rsplit(".", 1)[1]], url
        assert body, url


def first_party_imports(path):
    """Top-level names a module imports that live in this repository."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {name for name in names if (ROOT / name).is_dir() or (ROOT / f"{name}.py").exists()}


def test_the_image_copies_every_file_the_app_imports():
    copied = copied_paths(parse_dockerfile())
    entry_points = [ROOT / "wsgi.py", ROOT / "gunicorn.conf.py", ROOT / "config.py"]
    modules = entry_points + sorted((ROOT / "flashcart").rglob("*.py"))
    needed = set().union(*(first_party_imports(path) for path in modules))
    names = {path.name for path in copied}

    assert {"flashcart", "config"} <= needed
    assert {name if (ROOT / name).is_dir() else f"{name}.py" for name in needed} <= names
    assert {path.name for path in entry_points} <= names
    assert "requirements.txt" in names


def test_the_image_runs_as_an_unprivileged_user():
    image = parse_dockerfile()
    assert image["user"] not in (None, "root", "0")
    assert any(f"--uid {IMAGE_UID}" in command for command in image["run"])


def test_docker_compose_yml_follows_the_compose_specification():
    schema = json.loads((ROOT / "tests" / "schemas" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in jsonschema.Draft7Validator(schema).iter_errors(compose_file.load())
    ]
    assert errors == []


def test_the_schema_check_catches_a_broken_compose_file():
    schema = json.loads((ROOT / "tests" / "schemas" / "compose-spec.json").read_text())
    broken = compose_file.load()
    broken["services"]["api"]["depends_on"] = {"init": {"condition": "when_it_feels_like_it"}}
    broken["services"]["api"]["restart_policy"] = "always"

    assert not jsonschema.Draft7Validator(schema).is_valid(broken)


def test_compose_prepares_mongodb_before_the_api_and_gives_every_app_service_its_settings():
    services = compose_file.load()["services"]
    app_services = {name for name, service in services.items() if service.get("build") == "."}

    assert services["init"]["command"][:4] == ["flask", "--app", "wsgi", "init"]
    assert services["api"]["depends_on"]["init"] == {"condition": "service_completed_successfully"}
    for name in app_services:
        assert {"MONGO_URI", "REDIS_URL", "JWT_SECRET_KEY"} <= set(services[name]["environment"])


def test_compose_runs_the_webhook_deliverer_in_a_loop_with_its_metrics_port():
    deliverer = compose_file.load()["services"]["deliverer"]
    command = deliverer["command"]

    assert command[:4] == ["flask", "--app", "wsgi", "deliver"]
    assert command[command.index("--every") + 1] == "1"
    assert command[command.index("--metrics-port") + 1] in deliverer["expose"]
    assert deliverer["restart"] == "unless-stopped"
