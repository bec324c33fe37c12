"""TokenService over gRPC."""
from __future__ import annotations

from datetime import timezone

from google.protobuf import empty_pb2

from mailgate.v1 import token_service_pb2 as pb, token_service_pb2_grpc

from .. import paging
from ..converters import resource_id, timestamp
from ..store.models import ApiTokenRow
from ..errors import denied
from . import scope
from .permissions import TOKENS_ADMIN
from .tokens import Principal, Tokens, check_request


def token_to_proto(row: ApiTokenRow) -> pb.Token:
    token = pb.Token(name=f"tokens/{row.id}", display_name=row.display_name, permissions=row.permissions,
                     campaigns=row.campaigns, providers=[f"providers/{p}" for p in row.providers],
                     create_time=timestamp(row.create_time))
    if row.expire_time is not None:
        token.expire_time.CopyFrom(timestamp(row.expire_time))
    if row.last_use_time is not None:
        token.last_use_time.CopyFrom(timestamp(row.last_use_time))
    return token


def _within_own(creator: Principal, permissions: list[str], campaigns: list[str], provider_ids: list[str]) -> None:
    """A token grants no more than its creator holds: its permissions, inside its scope."""
    for p in permissions:
        if not creator.may(p):
            raise denied(p)
    if ((creator.campaigns and not (campaigns and set(campaigns) <= creator.campaigns))
            or (creator.providers and not (provider_ids and set(provider_ids) <= creator.providers))):
        raise denied(TOKENS_ADMIN)


class TokenServicer(token_service_pb2_grpc.TokenServiceServicer):
    def __init__(self, tokens: Tokens, pages: paging.PageTokens):
        self.tokens, self.pages = tokens, pages

    async def CreateToken(self, request: pb.CreateTokenRequest, context):
        t = request.token
        expire = t.expire_time.ToDatetime(tzinfo=timezone.utc) if t.HasField("expire_time") else None
        provider_ids = check_request(t.display_name, list(t.permissions), list(t.campaigns), list(t.providers),
                                     expire)
        _within_own(scope.current(), list(t.permissions), list(t.campaigns), provider_ids)
        row, secret = await self.tokens.create(t.display_name.strip(), list(t.permissions), list(t.campaigns),
                                               provider_ids, expire)
        return pb.CreateTokenResponse(token=token_to_proto(row), secret=secret)

    async def ListTokens(self, request: pb.ListTokensRequest, context):
        page = await self.pages.page(self.tokens.list, lambda r: (r.create_time, r.id), "tokens", "",
                                     request.page_token, request.page_size)
        tokens, next_token = page.shown(token_to_proto)
        return pb.ListTokensResponse(tokens=tokens, next_page_token=next_token)

    async def DeleteToken(self, request: pb.DeleteTokenRequest, context):
        await self.tokens.revoke(resource_id(request.name, "tokens"))
        return empty_pb2.Empty()
