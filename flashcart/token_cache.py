"""flask-jwt-extended's manager, remembering the tokens it has verified.

Verifying a token the library's way decodes it three times over (claims and header
unverified, to pick the key, then verified; PyJWT validates base64 character by
character): about 250 us per request. With the default key that choice is moot, so
a token not seen before is decoded once (about 85 us), with the same checks. A
drop's clients send the same token again and again (reserve, checkout, polling), so
each worker keeps the claims of tokens it verified recently and re-checks only
their expiry. Revocation is still checked on every request: it runs after decoding.

Once a token is verified, the library reads its header yet again, decoding the whole
token for it (about 7% of a reservation's CPU). Tokens signed here share one header
segment, so each worker parses a header segment once, and answers from that only for
the token its thread has just verified (the signature covers the segment).
"""

import threading
import time

import jwt
from flask_jwt_extended import JWTManager, view_decorators
from flask_jwt_extended.config import config
from flask_jwt_extended.default_callbacks import default_decode_key_callback
from flask_jwt_extended.tokens import _decode_jwt

CACHE_SIZE = 8192
HEADER_SEGMENTS_KEPT = 16
_library_header = view_decorators.get_unverified_jwt_headers
_headers = {}
_headers_lock = threading.Lock()
_just_verified = threading.local()


def _verified_token_header(encoded_token):
    """What the library's header reader answers."""
    if getattr(_just_verified, "token", None) != encoded_token:
        return _library_header(encoded_token)
    segment = encoded_token.partition(".")[0]
    header = _headers.get(segment)
    if header is None:
        header = _library_header(encoded_token)
        if all(value is None or isinstance(value, (str, int, float)) for value in header.values()):
            # Flat, so a shallow copy per caller keeps the remembered one intact.
            with _headers_lock:
                if len(_headers) >= HEADER_SEGMENTS_KEPT:
                    _headers.pop(next(iter(_headers)))  # oldest first
                _headers[segment] = header
    return dict(header)


class CachingJWTManager(JWTManager):
    def __init__(self, app=None, add_context_processor=False):
        self._verified = {}
        self._lock = threading.Lock()
        super().__init__(app, add_context_processor)

    def init_app(self, app, add_context_processor=False):
        super().init_app(app, add_context_processor)
        # Its request path reads the header right after decode_token verified the token.
        view_decorators.get_unverified_jwt_headers = _verified_token_header

    def _decode_jwt_from_config(self, encoded_token, csrf_value=None, allow_expired=False):
        claims = self._verify(encoded_token, csrf_value, allow_expired)
        _just_verified.token = encoded_token
        return claims

    def _verify(self, encoded_token, csrf_value, allow_expired):
        cacheable = csrf_value is None and not allow_expired
        if cacheable:
            claims = self._verified.get(encoded_token)
            if claims is not None and claims["exp"] > time.time():
                return dict(claims)
        if allow_expired or self._decode_key_callback is not default_decode_key_callback:
            return super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)
        claims = self._decode_once(encoded_token, csrf_value)
        if cacheable and "exp" in claims:
            with self._lock:
                if len(self._verified) >= CACHE_SIZE:
                    # Oldest first: dicts keep insertion order.
                    self._verified.pop(next(iter(self._verified)))
                self._verified[encoded_token] = dict(claims)
        return claims

    def _decode_once(self, encoded_token, csrf_value):
        """The library's own checks (signature, algorithms, exp/nbf/iat with leeway,
        audience, issuer, identity and CSRF claims) with the configured key."""
        try:
            return _decode_jwt(
                algorithms=config.decode_algorithms,
                allow_expired=False,
                audience=config.decode_audience,
                csrf_value=csrf_value,
                encoded_token=encoded_token,
                identity_claim_key=config.identity_claim_key,
                issuer=config.decode_issuer,
                leeway=config.leeway,
                secret=config.decode_key,
                verify_aud=config.decode_audience is not None,
                verify_sub=config.verify_sub,
            )
        except jwt.ExpiredSignatureError:
            # The library's path attaches the header and claims its expired-token
            # handler needs.
            return super()._decode_jwt_from_config(encoded_token, csrf_value)
