"""flask-jwt-extended's manager, remembering the tokens it has verified.

Verifying a token decodes it three times over (PyJWT validates base64 character by
character) and checks its signature: a few hundred microseconds per request. A
drop's clients send the same token again and again (reserve, checkout, polling),
so each worker keeps the claims of tokens it verified recently and re-checks only
their expiry. Revocation is still checked on every request: it runs after decoding.
"""

import threading
import time

from flask_jwt_extended import JWTManager

CACHE_SIZE = 8192


class CachingJWTManager(JWTManager):
    def __init__(self, app=None, add_context_processor=False):
        self._verified = {}
        self._lock = threading.Lock()
        super().__init__(app, add_context_processor)

    def _decode_jwt_from_config(self, encoded_token, csrf_value=None, allow_expired=False):
        cacheable = csrf_value is None and not allow_expired
        if cacheable:
            claims = self._verified.get(encoded_token)
            if claims is not None and claims["exp"] > time.time():
                return dict(claims)
        claims = super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)
        if cacheable and "exp" in claims:
            with self._lock:
                if len(self._verified) >= CACHE_SIZE:
                    # Oldest first: dicts keep insertion order.
                    self._verified.pop(next(iter(self._verified)))
                self._verified[encoded_token] = dict(claims)
        return claims
