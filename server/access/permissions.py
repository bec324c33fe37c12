"""The permissions, and which one each RPC needs: one table (docs/security.md
shows it). An RPC missing from the table is closed to everyone, so a new method
cannot ship open by accident (tests/test_access.py fails on it)."""
from __future__ import annotations

PROVIDERS_READ = "providers.read"
PROVIDERS_WRITE = "providers.write"
MAIL_SEND = "mail.send"
MAIL_READ = "mail.read"
INBOUND_CONSUME = "inbound.consume"
INBOUND_READ = "inbound.read"
INBOUND_MANAGE = "inbound.manage"
TOKENS_ADMIN = "tokens.admin"
ALL = "*"  # every permission, present and future: the administrator token

PERMISSIONS = {
    PROVIDERS_READ: "read providers, their events and the installed drivers",
    PROVIDERS_WRITE: "create, change, check, activate, authorize and delete providers",
    MAIL_SEND: "send mail",
    MAIL_READ: "read sent mail and its state",
    INBOUND_CONSUME: "stream a campaign's inbound mail and acknowledge it",
    INBOUND_READ: "read inbound mail, with its raw bytes",
    INBOUND_MANAGE: "put inbound mail back in its queue",
    TOKENS_ADMIN: "create, list and revoke API tokens",
    ALL: "every permission",
}

_BY_SERVICE = {
    "mailgate.v1.ProviderService": {
        "CreateProvider": PROVIDERS_WRITE, "GetProvider": PROVIDERS_READ, "ListProviders": PROVIDERS_READ,
        "UpdateProvider": PROVIDERS_WRITE, "DeleteProvider": PROVIDERS_WRITE,
        "ValidateProvider": PROVIDERS_WRITE, "ActivateProvider": PROVIDERS_WRITE,
        "CompleteAuthorization": PROVIDERS_WRITE, "ListDrivers": PROVIDERS_READ,
        "ListProviderEvents": PROVIDERS_READ,
    },
    "mailgate.v1.MailService": {
        "SendEmail": MAIL_SEND, "GetOutboundMessage": MAIL_READ, "ListOutboundMessages": MAIL_READ,
    },
    "mailgate.v1.InboundService": {
        "StreamInboundMail": INBOUND_CONSUME, "AckInboundMail": INBOUND_CONSUME,
        "GetInboundMessage": INBOUND_READ, "ListInboundMessages": INBOUND_READ,
        "RequeueInboundMessage": INBOUND_MANAGE,
    },
    "mailgate.v1.TokenService": {
        "CreateToken": TOKENS_ADMIN, "ListTokens": TOKENS_ADMIN, "DeleteToken": TOKENS_ADMIN,
    },
}

# Full method name -> the permission it needs.
RPC_PERMISSIONS = {f"/{service}/{method}": permission
                   for service, methods in _BY_SERVICE.items() for method, permission in methods.items()}

# Open to anyone who can reach the port: load balancers probe it without credentials.
OPEN_SERVICES = ("grpc.health.v1.Health",)
# Any valid credential: they describe the contract, which is public, but not to strangers.
CREDENTIAL_SERVICES = ("grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection")


def service_of(method: str) -> str:
    """`/pkg.Service/Method` -> `pkg.Service`."""
    return method.lstrip("/").split("/", 1)[0]
