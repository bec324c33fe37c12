"""The limits on what a caller sends, in one place; docs/security.md ("Caller input")
lists them.

Each is checked before anything costly is done with the value (parsing an address,
a regular expression, a database read, a log line), and refused as a field
violation. Lengths count characters (code points) unless they say octets.
"""
from __future__ import annotations

# --- mail headers ----------------------------------------------------------------------
# RFC 5322 2.1.1: a line is at most 998 octets. A header value the caller writes (a
# subject, a display name, an attachment's filename) fits on one such line.
HEADER_TEXT = 998
# RFC 5321 4.5.3.1.3: a path is at most 256 octets with its angle brackets.
ADDRESS = 254
# One recipient or Reply-To entry, display name and address. The address is at most
# ADDRESS; this leaves a display name room. (Parsing an entry costs time that grows
# faster than its length: ~5 ms for the worst 320 characters, ~40 ms for 998.)
RECIPIENT_ENTRY = 320
# to + cc + bcc of one message; the server setting MAILGATE_MAX_RECIPIENTS changes it.
DEFAULT_MAX_RECIPIENTS = 1000
# Reply-To entries of a provider (after splitting on ";").
REPLY_TO = 20
ATTACHMENTS = 100
FILENAME = 255
CONTENT_TYPE = 255          # RFC 6838 4.2: type and subtype 127 characters each
MESSAGE_ID = 998            # reply_to_message_id

# --- names -------------------------------------------------------------------------------
DISPLAY_NAME = 200          # a provider's, a token's
FROM_NAME = 200
CAMPAIGN = 200
CONSUMER = 200
REQUEST_ID = 200            # SendEmail's idempotency key (a UUID is 36)
RESOURCE_ID = 64            # the {id} of providers/{id}, outboundMessages/{id}...
NAME = 100                  # a whole resource name, collection included

# --- provider settings -------------------------------------------------------------------
USERNAME = 320              # RFC 5321: a 64-octet local part, "@" and a 255-octet domain
SECRET = 4096               # a password, an API key
SETTING_TEXT = 998          # any other text setting (a folder name, a plugin's text)
LIST_ENTRY = 200            # an entry of a list setting (folders)
LIST_ENTRIES = 100
PEM = 512 * 1024            # ca_certificates_pem: room for a whole CA bundle
SETTINGS = 200              # values in one provider's settings, nested ones included
UPDATE_MASK = 100           # paths in an update_mask

# --- lists, streams, tokens ---------------------------------------------------------------
FILTER = 1024
PAGE_TOKEN = 512
SUBSCRIBED_PROVIDERS = 100  # providers of one stream's subscription
ACK_IDS = 10_000            # ack ids (or deadline changes) in one request
ACK_ID = 128
AUTHORIZATION_FIELD = 4096  # CompleteAuthorization's state, code, error, error_description
AUTHORIZATION_RESPONSE = 8192  # its whole redirect URL

# --- admission (server settings; docs/operations.md) -----------------------------------
DEFAULT_MAX_CONCURRENT_CALLS = 2000         # MAILGATE_MAX_CONCURRENT_CALLS; open streams count
DEFAULT_SEND_BUDGET_BYTES = 256 << 20       # MAILGATE_SEND_BUDGET_BYTES: SendEmail calls together
DEFAULT_CLAIM_BYTES = 32 << 20              # MAILGATE_CLAIM_BYTES: raw mail one claim reads
REQUEST_BYTES = 1 << 20                     # a request of any method but SendEmail

# --- error answers -----------------------------------------------------------------------
# Errors travel in gRPC trailers, which clients refuse past 8 to 16 KB: an answer quotes
# at most ECHO characters of any value it was given, lists at most VIOLATIONS field
# violations (and one more saying how many it left out), and stays within these sizes.
ECHO = 64
VIOLATIONS = 20
VIOLATION_FIELD = 128
VIOLATION_DESCRIPTION = 256
MESSAGE_BYTES = 512
METADATA_VALUE = 128
DETAILS_BYTES = 4096  # BadRequest as serialized


def shown(value: object, limit: int = ECHO) -> str:
    """`repr(value)` for an error's words, at most about `limit` characters of the value:
    a long one is cut, saying how long it was."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value):,} characters)"
    if isinstance(value, (bytes, bytearray)) and len(value) > limit:
        return f"{bytes(value[:limit])!r}... ({len(value):,} bytes)"
    return repr(value)


def cut(text: str, limit: int) -> str:
    """`text` in at most `limit` characters (an ellipsis in the last one), encodable
    as UTF-8 (a lone surrogate becomes "?")."""
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode()
    return text


def cut_bytes(text: str, limit: int) -> str:
    """`text` in at most `limit` octets of UTF-8 (a lone surrogate becomes "?")."""
    data = text[:limit].encode("utf-8", "replace")
    if len(data) <= limit and len(text) <= limit:
        return data.decode()
    return data[:limit - 3].decode("utf-8", "ignore") + "…"


def too_long(limit: int, length: int, unit: str = "characters") -> str:
    return f"at most {limit:,} {unit}, got {length:,}"
