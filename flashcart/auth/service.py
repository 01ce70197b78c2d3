"""Accounts: sign-up, login, token refresh and roles."""

import threading

import pymongo.errors
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app
from pymongo import ReturnDocument

from flashcart.auth import emails, tokens
from flashcart.auth.hashing import Hasher
from flashcart.errors import Conflict, NotFound, Unauthorized
from flashcart.extensions import stores
from flashcart.stores import as_utc, object_id_or_none, utcnow

USER, ADMIN = "user", "admin"
ROLES = (USER, ADMIN)


class EmailTaken(Conflict):
    """An account with this email already exists."""

    code = "email_taken"


class InvalidCredentials(Unauthorized):
    """The email or password is wrong."""

    code = "invalid_credentials"


class UserNotFound(NotFound):
    """No account has this id."""

    code = "user_not_found"


class LastAdmin(Conflict):
    """The last admin cannot be demoted: make another account admin first."""

    code = "last_admin"


def normalise_email(email):
    """The stored spelling of an address (auth/emails.py)."""
    return emails.normalise(email)


# A worker's threads may log in together on its first request: one builds the hasher.
_HASHER_BUILT = threading.Lock()


def _hasher():
    app = current_app
    hasher = app.extensions.get("flashcart.password_hasher")
    if hasher is not None:
        return hasher
    with _HASHER_BUILT:
        hasher = app.extensions.get("flashcart.password_hasher")
        if hasher is None:
            hasher = Hasher(
                time_cost=app.config["ARGON2_TIME_COST"],
                memory_kib=app.config["ARGON2_MEMORY_KIB"],
                parallelism=app.config["ARGON2_PARALLELISM"],
                niceness=app.config["PASSWORD_CHECK_NICENESS"],
                threads=app.config["PASSWORD_CHECKS_IN_FLIGHT_PER_HOST"],
            )
            # Verified when no such user exists, so both failures cost the same time.
            app.extensions["flashcart.dummy_hash"] = hasher.hash("no such user")
            app.extensions["flashcart.password_hasher"] = hasher
    return hasher


def _users():
    return stores.db.users


def public(user):
    return {
        "id": str(user["_id"]),
        "email": user["email"],
        "name": user["name"],
        "role": user["role"],
        "created_at": as_utc(user["created_at"]),
    }


def register(*, email, password, name, role=USER):
    """Create an account. Sign-up always passes the default role."""
    now = utcnow()
    user = {
        "email": normalise_email(email),
        "name": name,
        "password_hash": _hasher().hash(password),
        "role": role,
        "created_at": now,
        "updated_at": now,
    }
    try:
        _users().insert_one(user)
    except pymongo.errors.DuplicateKeyError:
        raise EmailTaken() from None
    return public(user)


def authenticate(*, email, password):
    """The account for these credentials; raises InvalidCredentials otherwise."""
    hasher = _hasher()
    user = _users().find_one({"email": normalise_email(email)})
    stored = user["password_hash"] if user else current_app.extensions["flashcart.dummy_hash"]
    try:
        hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        raise InvalidCredentials() from None
    if user is None:
        raise InvalidCredentials()
    if hasher.check_needs_rehash(stored):
        _users().update_one(
            {"_id": user["_id"]}, {"$set": {"password_hash": hasher.hash(password)}}
        )
    return public(user)


def issue_token(user):
    """An access and refresh token pair for the (public) `user`."""
    return tokens.issue(user)


def login(*, email, password):
    return issue_token(authenticate(email=email, password=password))


def refresh(*, refresh_token):
    """A new token pair for a refresh token, which is spent.

    The role in the new access token is read from the account, so a promotion or
    demotion reaches the claim at the next refresh.
    """
    claims, session = tokens.redeem(refresh_token)
    user = get_user(claims["sub"])
    if user is None:
        tokens.end_session(claims)
        raise tokens.TokenRevoked("The account no longer exists.")
    return tokens.issue(user, session=session)


def has_role(user_id, role):
    """Whether the stored account has `role` now, whatever its token says."""
    oid = object_id_or_none(user_id)
    return oid is not None and _users().count_documents({"_id": oid, "role": role}, limit=1) > 0


def set_role(*, user_id, role):
    """Grant or revoke the admin role. The last admin cannot be demoted."""
    oid = object_id_or_none(user_id)
    before = None
    if oid is not None:
        before = _users().find_one_and_update(
            {"_id": oid, "role": {"$ne": role}},
            {"$set": {"role": role, "updated_at": utcnow()}},
            return_document=ReturnDocument.BEFORE,
        )
    if before is None:
        unchanged = _users().find_one({"_id": oid}) if oid else None
        if unchanged is None:
            raise UserNotFound()
        return public(unchanged)
    # Counted after the write: two admins demoting each other at once cannot both
    # pass a check made before it. The loser puts its admin back.
    if before["role"] == ADMIN and _users().count_documents({"role": ADMIN}, limit=1) == 0:
        _users().update_one({"_id": oid, "role": role}, {"$set": {"role": ADMIN}})
        raise LastAdmin()
    return public({**before, "role": role})


def get_user(user_id):
    oid = object_id_or_none(user_id)
    user = _users().find_one({"_id": oid}) if oid else None
    return public(user) if user else None


def ensure_admin(*, email, password=None, name="Administrator"):
    """Make sure an admin with this email exists; safe to run twice.

    Returns (user, created). An existing account is promoted to admin; its
    password is changed only when one is given.
    """
    email = normalise_email(email)
    existing = _users().find_one({"email": email})
    if existing is None:
        if not password:
            raise ValueError("a password is needed to create a new admin")
        try:
            return register(email=email, password=password, name=name, role=ADMIN), True
        except EmailTaken:
            existing = _users().find_one({"email": email})
    changes = {"role": ADMIN, "updated_at": utcnow()}
    if password:
        changes["password_hash"] = _hasher().hash(password)
    _users().update_one({"_id": existing["_id"]}, {"$set": changes})
    return public({**existing, **changes}), False


def normalise_stored_emails():
    """Rewrite stored addresses into today's spelling (auth/emails.py); safe to rerun.

    Returns (rewritten, clashes): how many were rewritten, and [(address, account ids)]
    for addresses two accounts now share, which are left as they are for an operator
    to merge or rename (the unique index allows one account per address).
    """
    rewritten, clashes = 0, []
    for user in _users().find({}, {"email": 1}):
        spelled = normalise_email(user["email"])
        if spelled == user["email"]:
            continue
        try:
            _users().update_one(
                {"_id": user["_id"]}, {"$set": {"email": spelled, "updated_at": utcnow()}}
            )
            rewritten += 1
        except pymongo.errors.DuplicateKeyError:
            other = _users().find_one({"email": spelled}, {"_id": 1})
            clashes.append((spelled, [str(user["_id"]), str(other["_id"]) if other else "?"]))
    return rewritten, clashes
