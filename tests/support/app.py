"""The app's test settings, and the password of every account the tests make."""

import os
import tempfile

from config import TestingConfig

PASSWORD = "correct horse battery"

# The suite is one host: its apps and the servers it starts share password-check
# slots with one another, not with another suite running on the same machine.
if not os.environ.get("PASSWORD_CHECK_SLOTS_DIR"):
    os.environ["PASSWORD_CHECK_SLOTS_DIR"] = tempfile.mkdtemp(prefix="flashcart-suite-slots-")
SLOTS_DIR = os.environ["PASSWORD_CHECK_SLOTS_DIR"]


def app_settings():
    """TestingConfig as a dict, for create_app (a test adds its overrides with |)."""
    return {key: getattr(TestingConfig, key) for key in dir(TestingConfig) if key.isupper()} | {
        "ENV_NAME": "testing",
        "PASSWORD_CHECK_SLOTS_DIR": SLOTS_DIR,
    }
