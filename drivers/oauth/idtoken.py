"""Verifying an OpenID Connect ID token: who signed in.

MSAL checks the nonce but not the signature, issuer or audience; the account
check that follows relies on all of them, so they are checked here, with the keys
the issuer publishes (its discovery document's jwks_uri).
"""
from __future__ import annotations

from typing import Any, Mapping

import jwt
import requests

from ..api import AuthorizationFailed, NotConfigured


def verify_id_token(session: requests.Session, meta: Mapping[str, Any], token: str, client_id: str,
                    nonce: str | None = None, *, leeway: float = 120) -> Mapping[str, Any]:
    """`meta`: the issuer's discovery document (issuer, jwks_uri). The issuer is
    always checked: a document without one is a configuration error."""
    if not meta.get("issuer"):
        raise NotConfigured("the authorization server's discovery document names no issuer: "
                            "ID tokens cannot be checked")
    if not token:
        raise AuthorizationFailed("the authorization server sent no ID token (is the openid scope granted?)")
    try:
        keys = session.get(meta["jwks_uri"], timeout=10).json()
    except (requests.RequestException, ValueError, KeyError) as e:
        raise AuthorizationFailed(f"cannot read the issuer's signing keys ({type(e).__name__})") from None
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        key = next((k for k in jwt.PyJWKSet.from_dict(keys).keys if k.key_id == kid), None)
        if key is None:
            raise AuthorizationFailed(f"the ID token is signed with an unknown key ({kid!r})")
        claims = jwt.decode(token, key.key, algorithms=["RS256"], audience=client_id, leeway=leeway,
                            options={"require": ["iss", "aud", "exp", "iat"]})
    except jwt.PyJWTError as e:
        raise AuthorizationFailed(f"the ID token is not valid: {e}") from None
    # Multi-tenant Microsoft authorities publish "{tenantid}" in the issuer.
    issuer = str(meta["issuer"]).replace("{tenantid}", str(claims.get("tid", "")))
    if claims["iss"] not in (issuer, issuer.removeprefix("https://")):  # Google uses both
        raise AuthorizationFailed(f"the ID token comes from {claims['iss']!r}, not {issuer!r}")
    if nonce is not None and claims.get("nonce") != nonce:
        raise AuthorizationFailed("the ID token does not answer this sign-in (nonce mismatch)")
    return claims


