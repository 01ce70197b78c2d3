"""Debian's nginx running the repository's deploy/nginx/ template, in the foreground
on a free loopback port, as docker-compose.yml's `nginx` service runs it (the
slow-clients tests and the login benchmark)."""

import getpass
import os
import shutil
import subprocess
import tempfile
import urllib.request

from tests.support import compose
from tests.support.ports import free_port
from tests.support.processes import ROOT, stop, wait_for

TEMPLATE = os.path.join(ROOT, "deploy", "nginx", "flashcart.conf.template")
BINARY = shutil.which("nginx") or "/usr/sbin/nginx"


def installed():
    return os.path.exists(BINARY)


# The per-address ceiling compose's nginx service runs with.
SHIPPED = compose.service_settings("nginx")
SHIPPED_CEILING = (SHIPPED["FLASHCART_PER_ADDRESS_RATE"], SHIPPED["FLASHCART_PER_ADDRESS_BURST"])


def render(listen_port, api, logins=None, ceiling=SHIPPED_CEILING):
    """The template with its variables filled in, as the nginx image's envsubst does:
    `api` and `logins` are host:port upstreams (logins: the API's, when None);
    `ceiling` is each address's (rate, burst)."""
    with open(TEMPLATE) as source:
        text = source.read()
    rate, burst = ceiling
    for name, value in (
        ("NGINX_PORT", f"127.0.0.1:{listen_port}"),
        ("FLASHCART_UPSTREAM", api),
        ("FLASHCART_LOGINS_UPSTREAM", logins or api),
        ("FLASHCART_PER_ADDRESS_RATE", rate),
        ("FLASHCART_PER_ADDRESS_BURST", burst),
    ):
        text = text.replace("${" + name + "}", value)
    if "${" in text:
        raise ValueError("the template has a variable render() does not fill in")
    return text


class Nginx:
    """`with Nginx(api, logins) as proxy:` nginx in front of those upstreams; `proxy.port`.
    `ceiling`: each address's (rate, burst), compose's unless given."""

    def __init__(self, api, logins=None, ceiling=SHIPPED_CEILING):
        self.api, self.logins, self.ceiling = api, logins, ceiling
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None
        self._prefix = None

    def __enter__(self):
        self._prefix = tempfile.TemporaryDirectory(prefix="flashcart-nginx-")
        prefix = self._prefix.name
        with open(os.path.join(prefix, "flashcart.conf"), "w") as out:
            out.write(render(self.port, self.api, self.logins, self.ceiling))
        # What the nginx image's own nginx.conf provides around conf.d/, with paths here.
        temp_paths = "\n".join(
            f"    {kind}_temp_path {prefix}/{kind}_temp;"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        with open(os.path.join(prefix, "nginx.conf"), "w") as out:
            out.write(
                # Workers as this user (not `nobody`), so they can write in the temp paths.
                f"daemon off;\nuser {getpass.getuser()};\nworker_processes 1;\n"
                f"pid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;\n"
                "events { worker_connections 4096; }\n"
                f"http {{\n    access_log off;\n{temp_paths}\n"
                f"    include {prefix}/flashcart.conf;\n}}\n"
            )
        with open(os.path.join(prefix, "stderr.log"), "wb") as log:
            self.process = subprocess.Popen(
                [BINARY, "-p", prefix, "-c", os.path.join(prefix, "nginx.conf"), "-e", "stderr"],
                stdout=log,
                stderr=log,
            )
        health = f"{self.url}/healthz"
        try:
            wait_for(lambda: urllib.request.urlopen(health, timeout=1).status == 200, "nginx", 20)  # noqa: S310
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        if self.process is not None:
            stop(self.process, timeout=10)
        self._prefix.cleanup()
