"""The rules a new password must meet (sign-up and `flask create-admin`).

8 to 128 characters, at least 5 different characters, not one of the well-known
leaked passwords shipped in common_passwords.txt, and not the account's email or
the part before its @. No "a digit and a capital letter" rules: NIST SP 800-63B
found they push people to predictable patterns and add little strength. Existing
passwords are not re-checked at login.
"""

from functools import cache
from importlib import resources

MIN_LENGTH, MAX_LENGTH = 8, 128
MIN_DISTINCT = 5
RULES = (
    f"{MIN_LENGTH} to {MAX_LENGTH} characters, at least {MIN_DISTINCT} of them different; "
    "not a commonly used password; not the account's email."
)


@cache
def common_passwords():
    text = resources.files(__package__).joinpath("common_passwords.txt").read_text("utf-8")
    lines = (line.strip() for line in text.splitlines())
    return frozenset(line.casefold() for line in lines if line and not line.startswith("#"))


def weaknesses(password, email=None):
    """Why `password` may not be chosen for the account `email`: a list, empty if it may."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        return [f"Use at least {MIN_LENGTH} characters (and at most {MAX_LENGTH})."]
    folded = password.casefold()
    found = []
    if len(set(folded)) < MIN_DISTINCT:
        found.append(f"Use at least {MIN_DISTINCT} different characters.")
    if folded in common_passwords():
        found.append("This password is too common: it is among the first that attackers try.")
    if email:
        email = email.strip().casefold()
        if folded in (email, email.partition("@")[0]):
            found.append("The password must not be the email address.")
    return found
