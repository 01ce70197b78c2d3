"""Login sessions: the family of every token one login leads to.

A login starts a session; each token it hands out, and each pair a refresh of it hands
out, names the session (`sid`), so ending the session ends them all. MongoDB keeps
the session (the durable record of whether it was ended and which refresh token is
its current one); Redis caches whether it is live, because every authenticated
request asks. A session Redis does not know about is looked up in MongoDB, never
taken as live: after Redis loses its data, a logout still holds.

Ending a session writes MongoDB first, then the cache. Should that second write fail,
the cached "live" can outlast the logout only until it expires, which is why it is
kept no longer than an access token lives (refresh always asks MongoDB).
"""

import math
import secrets

from flask import current_app
from pymongo import ReturnDocument

from flashcart.extensions import stores
from flashcart.redis_wire import query
from flashcart.stores import as_utc, utcnow

LIVE, ENDED = "live", "ended"
LOGOUT, REUSE = "logout", "refresh_token_reused"


class Refused(Exception):
    """The refresh token is not the session's current one, or the session has ended."""


def _sessions():
    return stores.db.sessions


def _cache_key(session_id):
    return f"fc:session:{session_id}"


def _seconds_until(moment):
    return math.ceil((as_utc(moment) - utcnow()).total_seconds())


def cache_live(session_id, expires_at):
    """Cache the session as live for as long as an access token issued now lasts.

    Never over a cached "ended" (NX): a logout racing the read that led here wins. A
    live entry already there is kept longer (GT), so a refresh's new access token is
    covered to its end; an "ended" one kept longer is harmless.
    """
    ttl = min(
        _seconds_until(expires_at),
        int(current_app.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds()),
    )
    if ttl > 0:
        key = _cache_key(session_id)
        with stores.redis.pipeline(transaction=False) as pipe:
            pipe.set(key, LIVE, ex=ttl, nx=True)
            pipe.expire(key, ttl, gt=True)
            pipe.execute()


def _cache_ended(session_id, ttl):
    if ttl > 0:
        stores.redis.set(_cache_key(session_id), ENDED, ex=ttl)


def start(*, user_id, expires_at):
    """A new live session of `user_id` whose refresh tokens last until `expires_at`.

    Returns (session id, generation of its first refresh token).
    """
    now = utcnow()
    session = {
        "_id": secrets.token_urlsafe(16),
        "user_id": user_id,
        "generation": 0,
        "ended_at": None,
        "end_reason": None,
        "created_at": now,
        "updated_at": now,
        "expires_at": expires_at,
    }
    _sessions().insert_one(session)
    cache_live(session["_id"], expires_at)
    return session["_id"], session["generation"]


def rotate(*, session_id, generation, expires_at):
    """Spend the session's refresh token of `generation`: the next generation's number.

    Only the current generation can be spent, once. Any other (a refresh token already
    spent, by its owner or a thief) ends the whole session: the OAuth 2.0 security
    best practice for rotating refresh tokens, since the server cannot tell which of
    the two holders is the thief. Raises Refused either way.
    """
    after = _sessions().find_one_and_update(
        {"_id": session_id, "generation": generation, "ended_at": None},
        {"$inc": {"generation": 1}, "$set": {"expires_at": expires_at, "updated_at": utcnow()}},
        return_document=ReturnDocument.AFTER,
    )
    if after is not None:
        cache_live(session_id, expires_at)
        return after["generation"]
    current = _sessions().find_one({"_id": session_id})
    if current is not None and current["ended_at"] is None:
        end(session_id=session_id, reason=REUSE)
    raise Refused()


def end(*, session_id, reason=LOGOUT):
    """End the session (and so every token of it). Safe to repeat."""
    now = utcnow()
    _sessions().update_one(
        {"_id": session_id, "ended_at": None},
        {"$set": {"ended_at": now, "end_reason": reason, "updated_at": now}},
    )
    session = _sessions().find_one({"_id": session_id})
    if session is not None:
        _cache_ended(session_id, _seconds_until(session["expires_at"]))


def is_live(session_id, *, token_expires_at, along=()):
    """Whether the session is live, and the replies of `along`. Asked on every
    authenticated request: one raw Redis round trip (redis_wire), and a MongoDB read
    only when Redis has no answer. `token_expires_at` (epoch seconds) bounds how long
    an unknown id is cached. `along`: more Redis commands the request sends in the
    same round trip (the rate-limit counters it pays, flashcart/rate_limits.py)."""
    state, *along_replies = query(stores.redis, [("GET", _cache_key(session_id)), *along])
    if state is not None:
        return state == LIVE, along_replies
    session = _sessions().find_one({"_id": session_id})
    if session is None or session["ended_at"] is not None:
        ttl = _seconds_until(session["expires_at"]) if session else 0
        _cache_ended(session_id, max(ttl, math.ceil(token_expires_at - utcnow().timestamp())))
        return False, along_replies
    cache_live(session_id, session["expires_at"])
    return True, along_replies
