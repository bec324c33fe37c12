"""`mailgate providers ...` and `mailgate drivers`: one function per command, each
taking the client, the parsed arguments and stdout, returning the exit status.
Errors are raised (MailgateError, UsageError) and printed by `main`."""
from __future__ import annotations

import argparse

import grpc

from mailgate.client import MailgateClient, MailgateError
from mailgate.v1 import driver_pb2, provider_pb2

from . import candidate, output, progress
from .candidate import UsageError
from .output import Stream, limited, page_size

Provider = provider_pb2.Provider
OK, REFUSED = 0, 1


def create(mg: MailgateClient, args: argparse.Namespace, out: Stream) -> int:
    type_ = args.type or "smtp_imap"
    provider, _ = candidate.build(args, type_, _driver(mg, type_, strict=False), prompt=True)
    provider.type = type_
    with progress.waiting("checking the credentials"):
        created = mg.create_provider(provider, validate_only=args.validate_only)
    if args.json:
        out.print(output.to_json(created))
        return OK
    out.print("checks passed; nothing stored (--validate-only)" if args.validate_only
              else f"created {created.name}")
    output.provider_details(out, created)
    return OK


def list_(mg: MailgateClient, args: argparse.Namespace, out: Stream) -> int:
    providers = list(mg.list_providers(filter=args.filter))
    if args.json:
        out.print(output.to_json(providers))
    elif providers:
        output.provider_table(out, providers)
    else:
        out.print("no providers" + (" match the filter" if args.filter else " yet"))
    return OK


def get(mg: MailgateClient, args: argparse.Namespace, out: Stream) -> int:
    p = mg.get_provider(args.ref)
    if args.json:
        out.print(output.to_json(p))
    else:
        output.provider_details(out, p)
    return OK


def update(mg: MailgateClient, args: argparse.Namespace, out: Stream) -> int:
    current = mg.get_provider(args.ref)  # resolves the ref, and the type decides the settings field
    patch, paths = candidate.build(args, current.type, _driver(mg, current.type, strict=False),
                                   prompt=False)
    if not paths:
        raise UsageError("nothing to change: give the flags of the fields to change (see --help)")
    patch.name, patch.etag = current.name, args.etag
    with progress.waiting("updating"):
        updated = mg.update_provider(patch, paths, validate_only=args.validate_only)
    if args.json:
        out.print(output.to_json(updated))
        return OK
    out.print(("checks passed; nothing stored (--validate-only): " if args.validate_only
               else f"updated {updated.name}: ") + ", ".join(paths))
    output.provider_details(out, updated)
    return OK


def validate(mg: MailgateClient, args: argparse.Namespace, out: Stream) -> int:
    if args.ref:
        if flags := candidate.given(args):
            raise UsageError(f"{flags[0]} describes a candidate; give either a provider or flags, "
                             "not both")
        target: str | Provider = args.ref
    else:
        type_ = args.type or "smtp_imap"
        target, _ = candidate.build(args, type_, _driver(mg, type_, strict=False), prompt=True)
        target.type = type_
    with progress.waiting("checking"):
        resp = mg.validate_provider(target)
    if args.json:
        out.print(output.to_json(resp))
    else:
        output.report(out, resp.report)
        output.notices(out, resp.notices)
        output.verdict(out, resp.report)
    return OK if resp.report.ok else REFUSED


def activate(mg: MailgateClient, args: argparse.Namespace, out: Stream) -> int:
    with progress.waiting("activating"):
        resp = mg.activate_provider(args.ref)
    return _state_and_report(resp, args, out)


def authorize(mg: MailgateClient, args: argparse.Namespace, out: Stream) -> int:
    with progress.waiting("completing the sign-in"):
        resp = mg.complete_authorization(args.redirect_url)
    return _state_and_report(resp, args, out)


def events(mg: MailgateClient, args: argparse.Namespace, out: Stream) -> int:
    filter_ = f"type = {args.type.upper()}" if args.type else ""
    found = limited(mg.list_provider_events(args.ref, filter_, page_size=page_size(args.limit)), args.limit)
    if args.json:
        out.print(output.to_json(found))
    elif found:
        output.event_table(out, found)
    else:
        out.print("no events" + (" of that type" if args.type else ""))
    return OK


def _state_and_report(resp, args: argparse.Namespace, out: Stream) -> int:
    """Prints an Activate/CompleteAuthorization response: the state, any sign-in to do, the checks."""
    p = resp.provider
    if args.json:
        out.print(output.to_json(resp))
    else:
        state = output.state_word(p.state)
        out.print(f"{p.display_name} ({p.name}): {out.paint(state, state)}"
                  + (f" - {p.state_reason}" if p.state_reason else ""))
        if "authorization" in resp.DESCRIPTOR.fields_by_name and resp.HasField("authorization"):
            out.print(f"sign in and consent at: {resp.authorization.authorization_uri}")
            out.print(f"(the link expires {output.when(resp.authorization.expire_time)})")
            out.print("then: mailgate providers authorize '<the address the browser was sent back to>'")
        if resp.report.checks:
            out.print()
            output.report(out, resp.report)
    return REFUSED if p.state == Provider.STATE_RED else OK


def delete(mg: MailgateClient, args: argparse.Namespace, out: Stream) -> int:
    name = mg.resolve(args.ref)
    mg.delete_provider(name, etag=args.etag)
    out.print("{}" if args.json else f"deleted {name}" + (f" ({args.ref})" if args.ref != name else ""))
    return OK


def drivers(mg: MailgateClient, args: argparse.Namespace, out: Stream) -> int:
    if args.type:
        d = _driver(mg, args.type, strict=True)
        assert d is not None
        if args.json:
            out.print(output.to_json(d))
        else:
            output.driver_details(out, d)
        return OK
    found = mg.list_drivers()
    if args.json:
        out.print(output.to_json(found))
    else:
        output.driver_table(out, found)
    return OK


def _driver(mg: MailgateClient, type_: str, *, strict: bool) -> driver_pb2.Driver | None:
    """The driver's schema (which settings are secret). Not strict: an unknown type is
    left for the server to refuse, in its own words, with the installed types."""
    found = mg.list_drivers()
    match = next((d for d in found if d.type == type_), None)
    if match is None and strict:
        raise MailgateError(grpc.StatusCode.NOT_FOUND,
                            f"no driver {type_!r} is installed; installed: "
                            + ", ".join(d.type for d in found), reason="NOT_FOUND")
    return match
