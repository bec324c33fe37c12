"""A local OAuth 2.0 / OpenID Connect authorization server for the tests.

Real client libraries (MSAL for Outlook, google-auth for Gmail) talk to it over real
HTTPS, and the test mail servers ask it whether a bearer token is good: Dovecot's
oauth2 passdb by token introspection (RFC 7662) over plain HTTP, aiosmtpd through
:meth:`OAuthServer.token_valid`. Nothing goes to the internet.

Two listeners on free ports of 127.0.0.1 share one state: HTTPS (certificate from the
given :class:`TestCA`) and plain HTTP. Endpoints (on both listeners):

* ``/{tenant}/v2.0/.well-known/openid-configuration``: Microsoft-style discovery for
  MSAL (``authority=server.authority(tenant), instance_discovery=False``), issuer
  ``{url}/{tenant}/v2.0``, endpoints ``/{tenant}/oauth2/v2.0/authorize`` and ``/token``.
* ``/.well-known/openid-configuration``: Google-style discovery, issuer ``url``,
  endpoints ``/authorize``, ``/token``.
* ``/authorize`` (GET): approves at once, 302 to the redirect URI with ``code`` and
  ``state``. ``/token`` (POST): grants ``authorization_code`` (PKCE), ``refresh_token``,
  ``client_credentials`` (app-only) and ``urn:ietf:params:oauth:grant-type:jwt-bearer``
  (service accounts with domain-wide delegation). ``/jwks``: the ID-token key.
  ``/introspect`` (POST ``token=``): RFC 7662, for Dovecot.

Token answers: ``access_token`` (opaque, 1280 characters like real ones, so long
AUTH lines get exercised), ``token_type``, ``expires_in``, ``scope`` (the requested
string, unchanged), ``refresh_token`` (user grants), ``id_token`` when ``openid`` was
in the scope (RS256, ``kid``; issuer ``{url}/{tenant}/v2.0`` on the tenant token
path, ``url`` on ``/token``; claims ``email``, ``email_verified``,
``preferred_username``, ``oid``, ``tid``, and ``upn`` on the tenant path, as an app
registration that asks for that optional claim gets them), ``client_info`` when
asked with ``client_info=1``.

App-only tokens (client_credentials) act for any mailbox. Introspection cannot tell
which mailbox is being logged in to: Dovecot 2.3 POSTs only ``token=`` and expands
no variables in ``introspection_url``. So every introspection answer carries
``"app_only": true|false`` (even inactive ones), an app-only token's ``username`` is
``service-account-<client_id>``, and the test Dovecot has a second oauth2 passdb
that requires ``app_only == true`` and compares a constant instead of the user
(see :mod:`.dovecot`). :meth:`OAuthServer.token_valid` (SMTP) gets the user directly.

What this needed (msal 1.39, google-auth 2.62, Dovecot 2.3.19):

* MSAL checks the ID token's ``nonce`` against the one it sent (a hash: echoed
  as is); ``client_info`` (base64url ``{"uid","utid"}``) must come back
  when the request had ``client_info=1``, or MSAL keeps no account to refresh with.
* oauthlib (google-auth-oauthlib) raises "Scope has changed" unless the token
  response's ``scope`` is the requested string exactly.
* Nagle off on the handler sockets (an MSAL call ~48 ms -> ~6 ms) and a short
  ``serve_forever`` poll interval (stop ~0.5 s -> ~0.05 s).
* google-auth's service-account assertion has ``aud`` = Google's token endpoint
  (not ``token_uri``): accepted here as Google does.
* MSAL warns (UserWarning) on every auth-code flow without
  ``response_mode="form_post"``; this server answers with a redirect only
  (``query``), as a service's HTTP callback receives it.
* TLS handshakes happen in the connection's own thread, so a stuck client never
  blocks the accept loop.

Nothing is logged (the standard request log would print query strings); the
``requests`` record has ``client_secret`` redacted.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import json
import secrets
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from .certs import TestCA

__all__ = ["OAuthServer", "OAuthServerError", "JWT_BEARER", "CODE_LIFETIME"]

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# google-auth's service-account assertions always name Google's token endpoint as
# audience, whatever token_uri says (google.oauth2.service_account, 2.62).
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
CODE_LIFETIME = 60  # seconds an authorization code stays usable
ID_TOKEN_LIFETIME = 3600
POLL_INTERVAL = 0.02  # serve_forever: how soon stop() is noticed
IDLE_TIMEOUT = 30  # a keep-alive connection idle this long is closed
REDACTED = "<redacted>"
# Opaque access tokens of a realistic size: Microsoft's are 1.5-2.5 KB JWTs, and a
# short token would hide line-length limits in SASL/SMTP code (e.g. aiosmtpd's 512).
ACCESS_TOKEN_BYTES = 960  # -> 1280 characters
_DROP = object()  # handler result: close the connection without answering


class OAuthServerError(RuntimeError):
    """The server did not start, or sign_in() did not get a redirect."""


@dataclass
class _Code:
    client_id: str
    redirect_uri: str | None
    scope: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    user: str
    expires_at: float


@dataclass
class _Grant:
    """What a refresh token stands for."""
    user: str
    client_id: str
    scope: str


@dataclass
class _AccessToken:
    user: str | None  # None for app-only
    client_id: str
    scope: str
    expires_at: float
    app_only: bool = False


@dataclass
class _ServiceAccount:
    client_email: str
    client_id: str
    key_id: str
    public_key: rsa.RSAPublicKey


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _is_email(value: str | None) -> bool:
    if not value or value.count("@") != 1:
        return False
    local, domain = value.split("@")
    return bool(local) and "." in domain and not any(c.isspace() for c in value)


class _Response:
    def __init__(self, status: int, body: dict | None = None, *,
                 headers: dict[str, str] | None = None):
        self.status = status
        self.body = body
        self.headers = headers or {}


def _changed(document: dict, changes: dict) -> dict:
    """`document` with `changes` applied: a None value removes the field."""
    out = {**document, **changes}
    return {k: v for k, v in out.items() if v is not None}


def _error(status: int, error: str, description: str) -> _Response:
    return _Response(status, {"error": error, "error_description": description})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the clients' sessions expect
    server_version = "mailgate-test-oauth"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args) -> None:  # noqa: A002
        pass  # the request line may hold codes and tokens: never logged

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        try:
            response = self.server.oauth._dispatch(method, self.path, self.headers, body)
        except Exception as exc:  # a bug here must show in the test, not hang it
            response = _error(500, "server_error", f"{type(exc).__name__}: {exc}")
        if response is _DROP:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        payload = b"" if response.body is None else json.dumps(response.body).encode()
        self.send_response(response.status)
        if response.body is not None:
            self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Pragma", "no-cache")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, oauth: OAuthServer, tls: ssl.SSLContext | None):
        self.oauth = oauth
        self.tls = tls
        self.connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def finish_request(self, request, client_address) -> None:
        # Runs in the connection's thread: the TLS handshake too.
        conn = request
        if self.tls is not None:
            try:
                request.settimeout(10)
                conn = self.tls.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError):
                return  # a client that does not trust the CA, or went away
        with self._conn_lock:
            self.connections.add(conn)
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            with self._conn_lock:
                self.connections.discard(conn)
            if conn is not request:
                with contextlib.suppress(OSError):
                    conn.close()

    def handle_error(self, request, client_address) -> None:
        pass  # connections reset by clients; handler bugs answer 500 instead

    def close_connections(self) -> None:
        with self._conn_lock:
            conns = list(self.connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class OAuthServer:
    """OAuth 2.0 / OIDC authorization server on 127.0.0.1 (HTTPS and plain HTTP).

    ``clients`` maps client_id -> client_secret (None: none yet, see
    :meth:`add_client`); a client registered with secret "" is public (no secret
    asked; client_credentials refused). Confidential clients authenticate with
    ``client_secret`` in the form or HTTP Basic. Context manager, or :meth:`start` /
    :meth:`stop`; ports are new at each start.

    Knobs (attributes; :meth:`reset` restores them): ``sign_in_as``, ``deny_next``,
    ``access_token_lifetime``, ``rotate_refresh_tokens``, ``refuse_refresh``,
    ``drop_token_requests``, ``discovery_changes``, ``id_token_claims``. Record: ``requests``, a list of (what, params): what is
    the grant_type for /token (dropped requests included), else "/authorize",
    "/introspect", "/jwks", "/.well-known/openid-configuration"; params are the
    query or form fields, ``client_secret`` redacted.
    """

    def __init__(self, ca: TestCA, *, clients: dict[str, str] | None = None):
        self.ca = ca
        self.clients: dict[str, str] = dict(clients or {})
        self.tenant_id = str(uuid.uuid4())  # the "tid" / "utid" of every user
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_id = secrets.token_hex(8)
        self._lock = threading.RLock()
        self._codes: dict[str, _Code] = {}
        self._refresh_tokens: dict[str, _Grant] = {}
        self._access_tokens: dict[str, _AccessToken] = {}
        self._service_accounts: dict[str, _ServiceAccount] = {}
        self.requests: list[tuple[str, dict]] = []
        #: Every access and refresh token handed out since the last reset (leak checks).
        self.issued: list[str] = []
        self._set_defaults()
        self._https: _HTTPServer | None = None
        self._http: _HTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self.port: int | None = None
        self.http_port: int | None = None

    def reset(self) -> None:
        """Knobs back to their defaults, ``requests`` emptied, every code and token
        forgotten (a test never sees another test's tokens). The signing key,
        clients and service accounts are kept."""
        with self._lock:
            self._set_defaults()
            self.requests.clear()
            self.issued.clear()
            self._codes.clear()
            self._refresh_tokens.clear()
            self._access_tokens.clear()

    def _set_defaults(self) -> None:
        #: Who signs in at /authorize; None: the request's login_hint.
        self.sign_in_as: str | None = None
        #: The next /authorize redirects with error=access_denied (one-shot).
        self.deny_next = False
        #: expires_in of new access tokens, seconds (0: expired at once).
        self.access_token_lifetime = 3600
        #: A refresh returns a new refresh token and invalidates the old one.
        self.rotate_refresh_tokens = True
        #: (error, error_description): every refresh_token grant gets this 400.
        self.refuse_refresh: tuple[str, str] | None = None
        #: The next N /token requests get their connection closed, no answer.
        self.drop_token_requests = 0
        #: Changes to both discovery documents: {field: value}, None removes the field.
        self.discovery_changes: dict[str, object] = {}
        #: Changes to the claims of new ID tokens: {claim: value}, None removes the claim.
        self.id_token_claims: dict[str, object] = {}

    def revoke(self, user: str) -> None:
        """Invalidate every access and refresh token of ``user`` (any case)."""
        who = user.casefold()
        with self._lock:
            for store in (self._refresh_tokens, self._access_tokens):
                for token in [t for t, rec in store.items()
                              if rec.user is not None and rec.user.casefold() == who]:
                    del store[token]

    def add_client(self, client_id: str, client_secret: str = "") -> None:
        """Register a client (secret "" = public client)."""
        with self._lock:
            self.clients[client_id] = client_secret

    def add_service_account(self, client_email: str) -> dict:
        """Register a service account with a fresh RSA key; returns the JSON key
        file's content for ``service_account.Credentials.from_service_account_info``
        (its ``token_uri`` is this server's)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_id = secrets.token_hex(20)
        client_id = str(secrets.randbelow(10**20) + 10**20)
        with self._lock:
            self._service_accounts[client_email] = _ServiceAccount(
                client_email, client_id, key_id, key.public_key())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode("ascii")
        return {
            "type": "service_account",
            "project_id": client_email.partition("@")[2].split(".")[0] or "project",
            "private_key_id": key_id,
            "private_key": pem,
            "client_email": client_email,
            "client_id": client_id,
            "auth_uri": self.authorize_uri,
            "token_uri": self.token_uri,
        }

    # -- addresses -----------------------------------------------------------------

    @property
    def url(self) -> str:
        self._require_started()
        return f"https://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        self._require_started()
        return f"http://127.0.0.1:{self.http_port}"

    def authority(self, tenant: str = "common") -> str:
        """MSAL's ``authority`` (use with ``instance_discovery=False``)."""
        return f"{self.url}/{tenant}"

    def issuer(self, tenant: str | None = None) -> str:
        """The ``iss`` of ID tokens: Microsoft-style per tenant, or Google-style."""
        return self.url if tenant is None else f"{self.url}/{tenant}/v2.0"

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    @property
    def authorize_uri(self) -> str:
        return f"{self.url}/authorize"

    @property
    def jwks_uri(self) -> str:
        return f"{self.url}/jwks"

    @property
    def introspection_uri(self) -> str:
        """Plain-HTTP introspection for Dovecot's ``introspection_url``; ``%u`` is
        expanded by Dovecot to the login user (needed by app-only tokens)."""
        return f"{self.http_url}/introspect"

    def _require_started(self) -> None:
        if self.port is None:
            raise OAuthServerError("OAuthServer not started")

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> OAuthServer:
        if self._https is not None:
            return self
        tls = self.ca.server_context()
        self._https = _HTTPServer(self, tls)
        self._http = _HTTPServer(self, None)
        self.port = self._https.server_address[1]
        self.http_port = self._http.server_address[1]
        for server, name in ((self._https, "OAuthServer-https"), (self._http, "OAuthServer-http")):
            thread = threading.Thread(target=server.serve_forever, args=(POLL_INTERVAL,),
                                      name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop both listeners and close open connections (ports are not kept)."""
        servers = [s for s in (self._https, self._http) if s is not None]
        self._https = self._http = None
        for server in servers:
            server.shutdown()
            server.server_close()
            server.close_connections()
        for thread in self._threads:
            thread.join(5)
        self._threads.clear()

    def __enter__(self) -> OAuthServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"{self.port}/{self.http_port}" if self.port else "stopped"
        return f"<OAuthServer 127.0.0.1:{where}>"

    # -- what a browser and a mail server do -------------------------------------------

    def sign_in(self, authorization_uri: str) -> str:
        """GET ``authorization_uri`` as a browser would (trusting the test CA only, no
        proxy), without following the redirect: returns the Location, i.e. the
        redirect URI with ``code`` and ``state`` (or ``error``)."""
        parts = urlsplit(authorization_uri)
        if parts.hostname != "127.0.0.1" or parts.port not in (self.port, self.http_port):
            raise ValueError(f"not this server's URI: {parts.scheme}://{parts.netloc}")
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=10,
                                               context=self.ca.client_context())
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            conn.request("GET", urlunsplit(("", "", parts.path or "/", parts.query, "")))
            response = conn.getresponse()
            body = response.read()
            location = response.getheader("Location")
        finally:
            conn.close()
        if response.status not in (302, 303) or not location:
            raise OAuthServerError(
                f"/authorize answered {response.status}: {body.decode('utf-8', 'replace')}")
        return location

    def token_valid(self, user: str, token: str) -> bool:
        """For SmtpServer(xoauth2=...): ``token`` is active and acts for ``user``."""
        with self._lock:
            record = self._access_tokens.get(token)
            if record is None or record.expires_at <= time.time():
                return False
            return record.app_only or (record.user or "").casefold() == user.casefold()

    # -- request handling --------------------------------------------------------------

    def _record(self, what: str, params: dict) -> None:
        safe = {k: (REDACTED if k == "client_secret" else v) for k, v in params.items()}
        with self._lock:
            self.requests.append((what, safe))

    def _dispatch(self, method: str, target: str, headers, body: bytes):
        parts = urlsplit(target)
        path = parts.path.rstrip("/") or "/"
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        form = {}
        if method == "POST":
            form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        segments = path.strip("/").split("/")
        # Microsoft-style paths carry the tenant first.
        tenant = None
        if len(segments) >= 2 and segments[0] not in (".well-known",):
            tenant, rest = segments[0], "/" + "/".join(segments[1:])
        else:
            rest = path

        if method == "GET" and path == "/.well-known/openid-configuration":
            self._record(path, {})
            return _Response(200, self._discovery(None))
        if method == "GET" and tenant and rest == "/v2.0/.well-known/openid-configuration":
            self._record("/.well-known/openid-configuration", {"tenant": tenant})
            return _Response(200, self._discovery(tenant))
        if method == "GET" and (path == "/jwks" or (tenant and rest == "/discovery/v2.0/keys")):
            self._record("/jwks", {})
            return _Response(200, self.jwks())
        if method == "GET" and (path == "/authorize" or (tenant and rest == "/oauth2/v2.0/authorize")):
            self._record("/authorize", query)
            return self._authorize(query)
        if method == "POST" and (path == "/token" or (tenant and rest == "/oauth2/v2.0/token")):
            return self._token(form, headers, tenant if path != "/token" else None, path)
        if method == "POST" and path == "/introspect":
            self._record("/introspect", {**form, **query})
            return self._introspect(form.get("token", ""))
        return _error(404, "not_found", f"no {method} {path}")

    def _discovery(self, tenant: str | None) -> dict:
        if tenant is None:
            base, authorize, token = self.url, self.authorize_uri, self.token_uri
        else:
            base = f"{self.url}/{tenant}/oauth2/v2.0"
            authorize, token = f"{base}/authorize", f"{base}/token"
        document = {
            "issuer": self.issuer(tenant),
            "authorization_endpoint": authorize,
            "token_endpoint": token,
            "jwks_uri": self.jwks_uri,
            "introspection_endpoint": f"{self.url}/introspect",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "grant_types_supported": ["authorization_code", "refresh_token",
                                      "client_credentials", JWT_BEARER],
            "code_challenge_methods_supported": ["S256", "plain"],
            "claims_supported": ["iss", "sub", "aud", "iat", "exp", "nonce", "email",
                                 "email_verified", "preferred_username", "name", "oid", "tid"],
            "tenant_region_scope": "NA",
        }
        return _changed(document, self.discovery_changes)

    def jwks(self) -> dict:
        """The JWK set with the ID-token signing key."""
        jwk = RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": self.key_id, "use": "sig", "alg": "RS256"}]}

    def _authorize(self, q: dict) -> _Response:
        client_id, redirect_uri = q.get("client_id", ""), q.get("redirect_uri")
        # Errors about the client or redirect URI must not redirect (RFC 6749 4.1.2.1).
        if client_id not in self.clients:
            return _error(400, "unauthorized_client", f"unknown client_id {client_id!r}")
        if not redirect_uri:
            return _error(400, "invalid_request", "redirect_uri missing")

        def redirect(**params) -> _Response:
            if q.get("state") is not None:
                params["state"] = q["state"]
            sep = "&" if urlsplit(redirect_uri).query else "?"
            return _Response(302, None, headers={"Location": redirect_uri + sep + urlencode(params)})

        with self._lock:
            deny, self.deny_next = self.deny_next, False
            user = self.sign_in_as or q.get("login_hint")
        if deny:
            return redirect(error="access_denied",
                            error_description="AADSTS65004: User declined to consent to access the app.")
        if q.get("response_mode", "query") != "query":
            return _error(400, "invalid_request",
                          "the test server only answers with a redirect (response_mode=query)")
        if q.get("response_type") != "code":
            return redirect(error="unsupported_response_type",
                            error_description="only response_type=code is supported")
        if not _is_email(user):
            return redirect(error="login_required",
                            error_description="no user to sign in: set sign_in_as or pass login_hint")
        method = q.get("code_challenge_method")
        if q.get("code_challenge") and (method or "plain") not in ("S256", "plain"):
            return redirect(error="invalid_request", error_description="unsupported code_challenge_method")
        code = secrets.token_urlsafe(32)
        with self._lock:
            self._codes[code] = _Code(
                client_id=client_id, redirect_uri=redirect_uri, scope=q.get("scope", ""),
                nonce=q.get("nonce"), code_challenge=q.get("code_challenge"),
                code_challenge_method=method or ("plain" if q.get("code_challenge") else None),
                user=user, expires_at=time.time() + CODE_LIFETIME)
        return redirect(code=code)

    def _client(self, form: dict, headers, *, confidential: bool = False) -> str | _Response:
        """The authenticated client_id, or an error response."""
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = headers.get("Authorization") or ""
        if auth.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(auth[6:].strip(), validate=True).decode()
                basic_id, _, basic_secret = decoded.partition(":")
            except ValueError:
                return _error(401, "invalid_client", "malformed Basic credentials")
            client_id, secret = unquote_plus(basic_id), unquote_plus(basic_secret)
        with self._lock:
            expected = self.clients.get(client_id or "")
        if expected is None:
            return _error(401, "invalid_client",
                          f"AADSTS700016: Application with identifier '{client_id}' was not found.")
        if expected:
            if not secret or not hmac.compare_digest(secret.encode(), expected.encode()):
                return _error(401, "invalid_client",
                              "AADSTS7000215: Invalid client secret provided.")
        elif confidential:
            return _error(401, "invalid_client",
                          "AADSTS7000218: The request body must contain 'client_assertion' or "
                          "'client_secret'.")
        return client_id

    def _token(self, form: dict, headers, tenant: str | None, path: str):
        grant_type = form.get("grant_type", "")
        self._record(grant_type or path, form)
        with self._lock:
            if self.drop_token_requests > 0:
                self.drop_token_requests -= 1
                return _DROP
        issuer = self.issuer(tenant)
        if grant_type == JWT_BEARER:
            return self._jwt_bearer(form, path)
        client_id = self._client(form, headers, confidential=grant_type == "client_credentials")
        if isinstance(client_id, _Response):
            return client_id
        if grant_type == "authorization_code":
            return self._authorization_code(form, client_id, issuer)
        if grant_type == "refresh_token":
            return self._refresh(form, client_id, issuer)
        if grant_type == "client_credentials":
            scope = form.get("scope", "")
            if not scope:
                return _error(400, "invalid_scope", "scope missing")
            return _Response(200, self._issue(None, client_id, scope, app_only=True))
        return _error(400, "unsupported_grant_type", f"grant_type {grant_type!r}")

    def _authorization_code(self, form: dict, client_id: str, issuer: str) -> _Response:
        with self._lock:
            code = self._codes.pop(form.get("code", ""), None)  # single use
        if code is None or code.expires_at <= time.time():
            return _error(400, "invalid_grant",
                          "AADSTS70008: The provided authorization code or refresh token has "
                          "expired due to inactivity, or was already redeemed.")
        if code.client_id != client_id:
            return _error(400, "invalid_grant", "AADSTS70000: code was issued to another client")
        if form.get("redirect_uri") != code.redirect_uri:
            return _error(400, "invalid_grant",
                          "AADSTS50011: The redirect URI does not match the one of the authorization request.")
        verifier = form.get("code_verifier")
        if code.code_challenge:
            if verifier is None:
                return _error(400, "invalid_grant", "AADSTS50148: code_verifier missing")
            computed = (_b64url(hashlib.sha256(verifier.encode("ascii", "replace")).digest())
                        if code.code_challenge_method == "S256" else verifier)
            if not hmac.compare_digest(computed, code.code_challenge):
                return _error(400, "invalid_grant",
                              "AADSTS501481: The Code_Verifier does not match the code_challenge.")
        elif verifier is not None:
            return _error(400, "invalid_grant", "code_verifier without a code_challenge")
        body = self._issue(code.user, client_id, code.scope, refresh=True)
        if "openid" in code.scope.split():
            body["id_token"] = self._id_token(code.user, client_id, issuer, code.nonce)
        if form.get("client_info") == "1":
            body["client_info"] = self._client_info(code.user)
        return _Response(200, body)

    def _refresh(self, form: dict, client_id: str, issuer: str) -> _Response:
        with self._lock:
            refused = self.refuse_refresh
            rotate = self.rotate_refresh_tokens
            old = form.get("refresh_token", "")
            grant = self._refresh_tokens.get(old)
            if refused is None and grant is not None and grant.client_id == client_id and rotate:
                del self._refresh_tokens[old]
        if refused is not None:
            error, description = refused
            return _error(400, error, description)
        if grant is None or grant.client_id != client_id:
            return _error(400, "invalid_grant",
                          "AADSTS9002313: Invalid request. The refresh token is malformed, "
                          "expired or revoked.")
        scope = form.get("scope") or grant.scope
        body = self._issue(grant.user, client_id, scope, refresh=rotate)
        if not rotate:
            body["refresh_token"] = old
        if "openid" in scope.split():
            body["id_token"] = self._id_token(grant.user, client_id, issuer, None)
        if form.get("client_info") == "1":
            body["client_info"] = self._client_info(grant.user)
        return _Response(200, body)

    def _jwt_bearer(self, form: dict, path: str) -> _Response:
        assertion = form.get("assertion", "")
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            return _error(400, "invalid_grant", "Invalid JWT.")
        with self._lock:
            account = self._service_accounts.get(str(unverified.get("iss")))
        if account is None or header.get("kid") != account.key_id:
            return _error(400, "invalid_grant", "Invalid JWT Signature.")
        try:
            claims = jwt.decode(
                assertion, account.public_key, algorithms=["RS256"],
                audience=[GOOGLE_TOKEN_AUDIENCE, self.token_uri, f"{self.url}{path}",
                          f"{self.http_url}{path}"],
                issuer=account.client_email,
                options={"require": ["iss", "aud", "iat", "exp"]})
        except jwt.PyJWTError as exc:
            return _error(400, "invalid_grant", f"Invalid JWT: {exc}")
        scope = str(claims.get("scope", ""))
        if not scope:
            return _error(400, "invalid_scope", "Empty or missing scope not allowed.")
        user = claims.get("sub") or account.client_email
        if not _is_email(user):
            return _error(400, "invalid_grant", "Invalid email or User ID")
        return _Response(200, self._issue(user, account.client_id, scope))

    def _issue(self, user: str | None, client_id: str, scope: str, *,
               app_only: bool = False, refresh: bool = False) -> dict:
        lifetime = int(self.access_token_lifetime)
        access = secrets.token_urlsafe(ACCESS_TOKEN_BYTES)
        body = {"token_type": "Bearer", "scope": scope, "expires_in": lifetime,
                "ext_expires_in": lifetime, "access_token": access}
        with self._lock:
            self.issued.append(access)
            self._access_tokens[access] = _AccessToken(
                user, client_id, scope, time.time() + lifetime, app_only)
            if refresh and user is not None:
                token = secrets.token_urlsafe(48)
                self._refresh_tokens[token] = _Grant(user, client_id, scope)
                self.issued.append(token)
                body["refresh_token"] = token
        return body

    def _oid(self, user: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"mailgate-test:{user.casefold()}"))

    def _client_info(self, user: str) -> str:
        info = {"uid": self._oid(user), "utid": self.tenant_id}
        return _b64url(json.dumps(info).encode())

    def _id_token(self, user: str, client_id: str, issuer: str, nonce: str | None) -> str:
        now = int(time.time())
        claims = {
            "iss": issuer, "sub": self._oid(user), "aud": client_id,
            "iat": now, "nbf": now, "exp": now + ID_TOKEN_LIFETIME,
            "email": user, "email_verified": True, "preferred_username": user,
            "name": user.partition("@")[0], "oid": self._oid(user), "tid": self.tenant_id,
            "ver": "2.0",
        }
        if issuer != self.url:  # Microsoft-style: the app registration asks for upn (docs/providers.md)
            claims["upn"] = user
        if nonce is not None:
            claims["nonce"] = nonce
        claims = _changed(claims, self.id_token_claims)
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.key_id})

    def _introspect(self, token: str) -> _Response:
        # "app_only" is in every answer, even inactive ones: Dovecot's app-only
        # passdb (active_attribute = app_only) lets an answer without it through
        # to its username check, which then fails as an internal error.
        with self._lock:
            record = self._access_tokens.get(token)
        if record is None or record.expires_at <= time.time():
            return _Response(200, {"active": False, "app_only": False})
        body = {"active": True, "app_only": record.app_only, "scope": record.scope,
                "client_id": record.client_id, "token_type": "Bearer",
                "exp": int(record.expires_at)}
        # RFC 7662's "username" is the resource owner: for app-only, the client.
        body["username"] = (f"service-account-{record.client_id}" if record.app_only
                            else record.user)
        return _Response(200, body)
