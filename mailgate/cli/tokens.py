"""`mailgate tokens create|list|revoke`."""
from __future__ import annotations

import argparse
from datetime import datetime, timedelta, timezone

from mailgate.client import MailgateClient

from . import output
from .candidate import UsageError
from .output import Stream

OK = 0


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    tokens = sub.add_parser("tokens", parents=[common], help="manage API tokens (needs tokens.admin)")
    tsub = tokens.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = tsub.add_parser("create", parents=[common], help="create a token and print its secret (shown once)")
    p.add_argument("display_name", help="what the token is for, e.g. 'dialer sales'")
    p.add_argument("--permission", "-p", action="append", default=[], required=True,
                   help="a permission, e.g. inbound.consume (repeat for several; docs/security.md lists them)")
    p.add_argument("--campaign", action="append", default=[], help="see only this campaign (repeatable)")
    p.add_argument("--provider", action="append", default=[],
                   help="see only this provider: name, id or providers/{id} (repeatable)")
    p.add_argument("--expires-in", metavar="DAYS", type=float, help="refuse the token after this many days")
    p.set_defaults(handler=create)
    p = tsub.add_parser("list", parents=[common], help="list tokens (never their secrets)")
    p.set_defaults(handler=list_)
    p = tsub.add_parser("revoke", parents=[common], help="revoke a token at once, on every replica")
    p.add_argument("name", help="tokens/{id} or the id")
    p.set_defaults(handler=revoke)


def create(mg: MailgateClient, args: argparse.Namespace, out: Stream) -> int:
    if args.expires_in is not None and args.expires_in <= 0:
        raise UsageError("--expires-in must be a positive number of days")
    expire = (datetime.now(timezone.utc) + timedelta(days=args.expires_in)) if args.expires_in else None
    resp = mg.create_token(args.display_name, args.permission, campaigns=args.campaign, providers=args.provider,
                           expire_time=expire)
    if args.json:
        out.print(output.to_json(resp))
        return OK
    out.print(f"created {resp.token.name}; its secret, shown only now:")
    out.print(resp.secret)
    return OK


def list_(mg: MailgateClient, args: argparse.Namespace, out: Stream) -> int:
    tokens = list(mg.list_tokens())
    if args.json:
        out.print(output.to_json(tokens))
    elif not tokens:
        out.print("no tokens")
    else:
        output.table(out, ["NAME", "DISPLAY NAME", "PERMISSIONS", "SCOPE", "CREATED", "LAST USED", "EXPIRES"], [
            [t.name, t.display_name, ",".join(t.permissions),
             ",".join([f"campaign={c}" for c in t.campaigns] + [f"provider={p}" for p in t.providers]) or "all",
             output.when(t.create_time), output.when(t.last_use_time) or "never",
             output.when(t.expire_time) or "never"] for t in tokens])
    return OK


def revoke(mg: MailgateClient, args: argparse.Namespace, out: Stream) -> int:
    mg.revoke_token(args.name)
    out.print(f"revoked {args.name}")
    return OK
