"""Logging set-up, and a last line of defence: a filter that redacts credentials
from every record by their shape, whatever code wrote it.

mailgate itself never puts a secret in a log record (passwords, tokens, codes and
verifiers stay out of its messages, reprs and errors). The filter is for the code
below it: MSAL logs the authorization code and the PKCE verifier at DEBUG, a
library's exception may carry a URL with a code in it, a protocol trace an AUTH
line. It knows what a credential looks like, not which credentials the process
has seen: it keeps no state, costs the same whatever came before, and leaves alone
a word that merely equals somebody's password.

What is redacted (the value only; the name around it stays):

* `name=value`, and `name: value` with a quoted name or value (URL queries, form
  bodies, JSON, Python reprs), for the names in `_NAMES` (password, client_secret,
  access_token, refresh_token, id_token, code, code_verifier, assertion, ...);
  an authorization code (`code`) only from 20 characters on, so status codes
  stay readable;
* `Authorization:` headers, and `Bearer` credentials anywhere (XOAUTH2's
  `auth=Bearer ...` too);
* mailgate API tokens `mgt_<id>_<secret>` (the id stays: it names the token);
* JWTs (ID tokens, most Microsoft access tokens), Google's `ya29.` access and
  `1//` refresh tokens, PEM private keys, passwords in URLs
  (`scheme://user:password@host`);
* protocol traces: SASL payloads (`AUTH PLAIN ...`, `AUTHENTICATE XOAUTH2 ...`),
  IMAP `LOGIN user password`, POP3 `PASS password`.

A message longer than `MAX_MESSAGE` characters is cut (and a traceback past
`MAX_TRACEBACK`): what one record may cost is bounded too.
"""
from __future__ import annotations

import logging
import re
import weakref

REDACTED = "[REDACTED]"
MAX_MESSAGE = 64 * 1024
MAX_TRACEBACK = 256 * 1024

# Names whose value is a credential, in key=value and JSON shapes.
_NAMES = ("password|passwd|pwd|pass_?phrase|client_secret|secret|access_token|refresh_token|id_token|"
          "code_verifier|client_assertion|assertion|api_key|private_key|session_token|token|code")
_Q = r"""(?:\\?["'])"""  # a quote, maybe escaped (JSON inside a JSON string)
_SHAPES = re.compile("|".join([
    # name=value, "name": "value", 'name': 'value', \"name\": \"value\" (a bare name
    # and a colon only before a quoted value: "password: wrong" in prose stays)
    rf"(?P<kv>(?P<open>{_Q}?)\b(?P<name>(?i:{_NAMES}))\b(?P=open)"
    r"""(?:\s*=\s*|(?<=["'])\s*:\s*|\s*:\s*(?=\\?["'])))"""
    r"""(?P<kvval>\\"(?:(?!\\").)*\\"|\\'(?:(?!\\').)*\\'|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|"""
    r"""\\?["'][^\s"'\\]*|[^\s&"',;)}\]>]+)""",
    # Authorization / Proxy-Authorization headers: the scheme stays
    r"""(?P<hdr>(?i:\b(?:proxy-)?authorization["']?\s*[:=]\s*["']?(?:basic|digest|negotiate|ntlm|token)\s+))"""
    r"(?P<hdrval>[\w\-.~+/]{8,}=*)",
    r"(?P<bearer>(?i:\bbearer)\s+)(?P<bearerval>[\w\-.~+/]{16,}=*)",
    r"(?P<mgt>\bmgt_[0-9a-f]{32}_)(?P<mgtval>[\w-]+)",
    r"(?P<jwt>\beyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]*(?:\.[\w-]*\.[\w-]*)?)",
    r"(?P<google>\bya29\.[\w-]{16,}|(?<![\w/])1//[\w-]{16,})",
    r"(?P<pem>-----BEGIN [A-Z ]*PRIVATE KEY-----(?:.*?-----END [A-Z ]*PRIVATE KEY-----|.*))",
    r"(?P<userinfo>\b[a-zA-Z][\w+.-]{0,31}://[^\s/:@]*:)(?P<userinfoval>[^\s/@]+)(?=@)",
    # SASL initial responses as traces show them
    r"(?P<sasl>(?i:\bauth(?:enticate)?\s+(?:plain|login|xoauth2|oauthbearer|cram-md5|scram-sha-[\w-]+))\s+)"
    r"(?P<saslval>[A-Za-z0-9+/]+=*)",
    # IMAP: tag LOGIN user password; POP3: PASS password (as the protocols spell them)
    r"""(?P<login>\b[A-Za-z0-9]{1,16} LOGIN\s+(?:"(?:[^"\\]|\\.)*"|[^\s"]+)\s+)"""
    r"""(?P<loginval>"(?:[^"\\]|\\.)*"|\{\d+\+?\}|[^\s"']+)""",
    r"(?P<pass>\bPASS\s+)(?P<passval>[^\s'\"]+)",
]), re.DOTALL)
_KEEP = ("kv", "hdr", "bearer", "mgt", "userinfo", "sasl", "login", "pass")
_SHORT_CODE = 20  # an authorization code is longer; SMTP and HTTP codes are not


def _replace(m: re.Match[str]) -> str:
    if m.group("kv") is not None:
        value = m.group("kvval")
        if m.group("name").lower() == "code" and len(value.strip("\\\"'")) < _SHORT_CODE:
            return m.group(0)
        quote = value[:2] if value[:1] == "\\" else value[:1] if value[:1] in "\"'" else ""
        return m.group("kv") + quote + REDACTED + quote
    for kept in _KEEP:
        if m.group(kept) is not None:
            return m.group(kept) + REDACTED
    return REDACTED


def redact(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` with every credential the shapes above recognize replaced, cut at `limit`."""
    if len(text) > limit:
        text = f"{text[:limit]}... [{len(text) - limit:,} more characters cut]"
    return _SHAPES.sub(_replace, text)


# Loggers whose records are built from names and ids only, never a value a caller or a
# server supplied (server/access/audit.py): nothing to redact, and one per call.
TRUSTED = frozenset({"mailgate.audit"})


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.name in TRUSTED:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format: the handler reports it
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, MAX_TRACEBACK)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, MAX_TRACEBACK)
        return True


_installed: "weakref.WeakSet[logging.Handler]" = weakref.WeakSet()


def protect(handler: logging.Handler) -> None:
    """Adds the redacting filter to a handler (once)."""
    if handler not in _installed:
        handler.addFilter(RedactingFilter())
        _installed.add(handler)


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    protect(handler)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
