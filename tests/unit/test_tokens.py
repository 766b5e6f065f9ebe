"""Identity-provider tokens (intraday/tokens.py), verified against a JWKS
served over HTTP by a real local server (tests.stack.IdentityProvider):
scopes from the token's claim, the holder from its subject, and every way
a token can be wrong refused."""

from __future__ import annotations

import time

import jwt
import pytest

from intraday.auth import AuthError
from intraday.tokens import TokenKeysUnavailable, TokenVerifier
from tests.stack import IdentityProvider

ISSUER, AUDIENCE = IdentityProvider.issuer, IdentityProvider.audience


@pytest.fixture(scope="module")
def provider():
    """An identity provider's JWKS endpoint with one published key."""
    idp = IdentityProvider()
    yield idp
    idp.close()


def _verifier(provider) -> TokenVerifier:
    return TokenVerifier(provider.jwks_url, ISSUER, AUDIENCE)


def test_a_valid_token_grants_the_scopes_it_names_and_only_the_gateways(provider):
    principal = _verifier(provider).verify(
        provider.token("desk-7", "forecast:read forecast:request openid profile", email="trader@desk7"))
    assert principal.scopes == {"forecast:read", "forecast:request"}
    assert principal.name == "trader@desk7" and principal.key_id == "jwt:desk-7"


@pytest.mark.parametrize(("change", "reason"), [
    ({"aud": "another-api"}, "audience"),
    ({"iss": "https://elsewhere.example"}, "issuer"),
    ({"ttl": -3600}, "expired"),
    ({"subject": None}, "sub"),
])
def test_a_token_for_someone_else_or_expired_is_refused(provider, change, reason):
    token = provider.token(**{"subject": "desk-7", "scopes": "forecast:read", **change})
    with pytest.raises(AuthError, match=f"(?i){reason}"):
        _verifier(provider).verify(token)


def test_a_token_signed_by_a_key_the_provider_does_not_publish_is_refused(provider):
    impostor = IdentityProvider()  # same issuer and key id, another key
    try:
        for token in (impostor.token("desk-7", "forecast:read"),
                      impostor.token("desk-7", "forecast:read", kid="k9")):  # a key id nobody published
            with pytest.raises(AuthError, match="invalid token"):
                _verifier(provider).verify(token)
    finally:
        impostor.close()


def test_a_symmetric_or_unsigned_token_is_refused(provider):
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": now + 60}
    for token in (jwt.encode(claims, "a-shared-secret-long-enough-for-hs256!", algorithm="HS256",
                             headers={"kid": "test-1"}),
                  jwt.encode(claims, None, algorithm="none", headers={"kid": "test-1"})):
        with pytest.raises(AuthError):
            _verifier(provider).verify(token)


def test_unreachable_keys_are_unavailable_not_a_refusal(provider):
    with pytest.raises(TokenKeysUnavailable):
        TokenVerifier("http://127.0.0.1:1/jwks.json", ISSUER, AUDIENCE).verify(
            provider.token("desk-7", "forecast:read"))


def test_a_flood_of_unknown_key_ids_reads_the_providers_keys_once_per_cooldown(provider):
    verifier = _verifier(provider)
    verifier.verify(provider.token("desk-7", "forecast:read"))  # the keys read once, as in service
    before = provider.fetches
    for n in range(300):  # each token names a key id nobody published
        with pytest.raises(AuthError, match="invalid token"):
            verifier.verify(provider.token("desk-7", "forecast:read", kid=f"forged-{n}"))
    reads = provider.fetches - before
    assert reads <= 1, f"{reads} reads of the keys for 300 forged tokens"
    assert verifier.verify(provider.token("desk-7", "forecast:read")).name == "desk-7"  # the real key works
