"""What every room's converters share: resource names (AIP-122) and timestamps."""
from __future__ import annotations

import re
from datetime import datetime, timezone

from google.protobuf.timestamp_pb2 import Timestamp

from . import limits
from .errors import InvalidArgument, Violation

# What the server's ids are made of (UUIDs, hex): a name with anything else names nothing.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.~-]{0,%d}" % (limits.RESOURCE_ID - 1))


def name_problem(name: str, collection: str) -> str | None:
    """Why `name` is not `{collection}/{id}` (AIP-122), or None."""
    if len(name) > limits.NAME:
        return f"{limits.shown(name)} is not a name of {collection}: {limits.too_long(limits.NAME, len(name))}"
    prefix, _, rid = name.partition("/")
    if prefix != collection or not _ID.fullmatch(rid):
        return f"{limits.shown(name)} is not a name of {collection} (expected {collection}/{{id}})"
    return None


def resource_id(name: str, collection: str, field: str = "name") -> str:
    """`{collection}/{id}` -> id (AIP-122 resource names)."""
    if problem := name_problem(name, collection):
        raise InvalidArgument([Violation(field, problem)])
    return name.partition("/")[2]


def provider_id(name: str, field: str = "name") -> str:
    return resource_id(name, "providers", field)


_EPOCH = {False: datetime(1970, 1, 1, tzinfo=timezone.utc), True: datetime(1970, 1, 1)}


def timestamp(dt: datetime) -> Timestamp:
    """As Timestamp.FromDatetime (a naive datetime is UTC), in integers, at a third of its cost."""
    d = dt - _EPOCH[dt.tzinfo is None]
    return Timestamp(seconds=d.days * 86400 + d.seconds, nanos=d.microseconds * 1000)
