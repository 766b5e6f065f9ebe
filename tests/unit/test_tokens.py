"""Identity-provider tokens (intraday/tokens.py), verified against a JWKS
served over HTTP by a real local server: scopes from the token's claim,
the holder from its subject, and every way a token can be wrong refused."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from intraday.auth import AuthError
from intraday.tokens import TokenKeysUnavailable, TokenVerifier

ISSUER, AUDIENCE = "https://idp.example", "intraday"


def _key(kid: str):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    return private, {**public, "kid": kid, "use": "sig", "alg": "RS256"}


@pytest.fixture(scope="module")
def provider():
    """An identity provider's JWKS endpoint with one published key."""
    private, public = _key("k1")
    body = json.dumps({"keys": [public]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield private, f"http://127.0.0.1:{server.server_port}/jwks.json"
    server.shutdown()


def _token(private, kid="k1", **claims) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "desk-7", "iat": now, "exp": now + 300, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, private, algorithm="RS256",
                      headers={"kid": kid})


def test_a_valid_token_grants_the_scopes_it_names_and_only_the_gateways(provider):
    private, url = provider
    principal = TokenVerifier(url, ISSUER, AUDIENCE).verify(
        _token(private, scope="forecast:read forecast:request openid profile", email="trader@desk7"))
    assert principal.scopes == {"forecast:read", "forecast:request"}
    assert principal.name == "trader@desk7" and principal.key_id == "jwt:desk-7"


@pytest.mark.parametrize(("change", "reason"), [
    ({"aud": "another-api"}, "audience"),
    ({"iss": "https://elsewhere.example"}, "issuer"),
    ({"exp": int(time.time()) - 3600}, "expired"),
    ({"sub": None}, "sub"),
])
def test_a_token_for_someone_else_or_expired_is_refused(provider, change, reason):
    private, url = provider
    with pytest.raises(AuthError, match=f"(?i){reason}"):
        TokenVerifier(url, ISSUER, AUDIENCE).verify(_token(private, **change))


def test_a_token_signed_by_a_key_the_provider_does_not_publish_is_refused(provider):
    _, url = provider
    impostor, _ = _key("k1")  # same key id, another key
    with pytest.raises(AuthError, match="invalid token"):
        TokenVerifier(url, ISSUER, AUDIENCE).verify(_token(impostor))
    stranger, _ = _key("k9")
    with pytest.raises(AuthError, match="invalid token"):
        TokenVerifier(url, ISSUER, AUDIENCE).verify(_token(stranger, kid="k9"))


def test_a_symmetric_or_unsigned_token_is_refused(provider):
    _, url = provider
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": now + 60}
    for token in (jwt.encode(claims, "a-shared-secret-long-enough-for-hs256!", algorithm="HS256",
                             headers={"kid": "k1"}),
                  jwt.encode(claims, None, algorithm="none", headers={"kid": "k1"})):
        with pytest.raises(AuthError):
            TokenVerifier(url, ISSUER, AUDIENCE).verify(token)


def test_unreachable_keys_are_unavailable_not_a_refusal(provider):
    private, _ = provider
    with pytest.raises(TokenKeysUnavailable):
        TokenVerifier("http://127.0.0.1:1/jwks.json", ISSUER, AUDIENCE).verify(_token(private))
