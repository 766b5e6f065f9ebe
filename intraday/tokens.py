"""Bearer tokens from an identity provider: JWTs the gateway accepts beside
its own API keys (production: `INTRADAY_JWT_JWKS_URL`). A token is
verified against the provider's published keys (JWKS, fetched and cached
by PyJWT), its issuer, audience and expiry; its `scope` claim (OAuth 2.0:
space-separated, or a list) grants the gateway's scopes it names, nothing
else; its subject (or email) is who `requested_by` records.
"""

from __future__ import annotations

import jwt

from intraday.auth import SCOPES, AuthError, Principal

KEYS_REFRESH_COOLDOWN_S = 60.0
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384"]  # asymmetric only: no shared secret


class TokenKeysUnavailable(Exception):
    """The identity provider's keys could not be fetched (503: try again)."""


class TokenVerifier:
    def __init__(self, jwks_url: str, issuer: str, audience: str, scope_claim: str = "scope",
                 keys_cache_seconds: int = 300):
        if not (jwks_url and issuer and audience):
            raise ValueError("a token verifier needs the JWKS URL, the issuer and the audience")
        self.issuer, self.audience, self.scope_claim = issuer, audience, scope_claim
        # A token naming a key id the provider does not publish makes PyJWT
        # read the keys again, at most once per cooldown: a flood of such
        # tokens does not become a flood of requests to the provider.
        self._keys = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=keys_cache_seconds, timeout=5,
                                     cooldown_duration=KEYS_REFRESH_COOLDOWN_S)

    def verify(self, token: str) -> Principal:
        """The principal a token stands for; AuthError if it is malformed,
        signed by a key the provider does not publish, for another issuer or
        audience, or expired."""
        try:
            key = self._keys.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError as e:
            raise TokenKeysUnavailable(f"the identity provider's keys are unavailable: {e}") from e
        except (jwt.PyJWKClientError, jwt.InvalidTokenError) as e:
            raise AuthError(f"invalid token: {e}") from e
        try:
            claims = jwt.decode(token, key.key, algorithms=ALGORITHMS, audience=self.audience,
                                issuer=self.issuer, options={"require": ["exp", "iss", "aud", "sub"]},
                                leeway=30)
        except jwt.InvalidTokenError as e:
            raise AuthError(f"invalid token: {e}") from e
        granted = claims.get(self.scope_claim, "")
        granted = granted.split() if isinstance(granted, str) else list(granted)
        subject = str(claims["sub"])
        return Principal(name=str(claims.get("email") or subject)[:64], key_id=f"jwt:{subject}"[:64],
                         scopes=frozenset(s for s in granted if s in SCOPES))
