"""docker-compose.yml as data: what the image and deployment tests check, and the
settings of a service that the tests and the benchmark run outside Docker."""

import os

import yaml

from tests.support.processes import ROOT

# Every app service's stores and secret (compose's x-app-environment): the tests and
# the benchmark give their own.
STORES_AND_SECRET = {"MONGO_URI", "REDIS_URL", "JWT_SECRET_KEY"}


def load():
    with open(os.path.join(ROOT, "docker-compose.yml")) as source:
        return yaml.safe_load(source)


def service_settings(name):
    """A service's own environment: everything but the stores and the secret."""
    environment = load()["services"][name]["environment"]
    return {key: value for key, value in environment.items() if key not in STORES_AND_SECRET}
