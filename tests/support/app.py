"""The app's test settings, and the password of every account the tests make."""

from config import TestingConfig

PASSWORD = "correct horse battery"


def app_settings():
    """TestingConfig as a dict, for create_app (a test adds its overrides with |)."""
    return {key: getattr(TestingConfig, key) for key in dir(TestingConfig) if key.isupper()} | {
        "ENV_NAME": "testing"
    }
