"""`mailgate`: run the server, or manage providers, mail and queues on a running one."""
from __future__ import annotations

import argparse
import asyncio
import os
import sys

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def _serve(args: argparse.Namespace) -> int:
    from mailgate.server import app, logs
    from mailgate.server.config import ConfigError, Settings
    from mailgate.server.secrets import SecretKeyError

    settings = Settings()
    if args.listen:
        settings.listen = args.listen
    if args.database_url:
        settings.database_url = args.database_url
    if args.trusted_network:
        settings.trusted_network = True
    logs.configure(args.log_level or settings.log_level)
    try:
        asyncio.run(app.serve(settings))
    except (ConfigError, SecretKeyError) as e:  # an operator's mistake: say it, no traceback
        print(f"mailgate serve: {e}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _rotate_keys(args: argparse.Namespace) -> int:
    from mailgate.server import keys, logs
    from mailgate.server.config import Settings
    from mailgate.server.secrets import SecretKeyError

    from .progress import StatusLine

    settings = Settings()
    if args.database_url:
        settings.database_url = args.database_url
    logs.configure("WARNING")

    status = StatusLine()

    def progress(done: int, total: int) -> None:
        if total:
            status.show(f"re-sealed {done} of {total} secrets")
    try:
        done = keys.rotate(settings.database_url, settings.key_file, retire=args.retire, progress=progress)
    except SecretKeyError as e:
        status.clear()
        print(f"mailgate keys rotate: {e}", file=sys.stderr)
        return EXIT_USAGE
    status.clear()
    print(("new key " if done.generated else "key ") + f"{done.key_id}: {done.resealed} secrets re-sealed")
    if done.retired:
        print("retired keys no secret uses: " + ", ".join(done.retired))
    elif done.unused:
        print("keys no secret uses any more: " + ", ".join(done.unused)
              + " (once every replica seals with the new key: run again with --retire)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import candidate, commands, inbound, mail, tokens

    parser = argparse.ArgumentParser(prog="mailgate", description=__doc__, epilog=(
        "exit status: 0 ok, 1 the server said no, a check failed or a message was refused for good, "
        "2 usage error, 3 server unreachable, 130 interrupted. Credentials: the API token in MAILGATE_TOKEN, else in the file "
        "MAILGATE_TOKEN_FILE names, else in ./mailgate.token (the administrator token a server "
        "started in this directory wrote). TLS: MAILGATE_TLS_CA (the CAs to trust, or 'system'), "
        "MAILGATE_TLS_CLIENT_CERT and MAILGATE_TLS_CLIENT_KEY (a client certificate)"))
    _global_options(parser)
    # The same options work after the subcommand too (`mailgate providers list --json`).
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)

    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--listen", help="host:port (default 127.0.0.1:50051, env MAILGATE_LISTEN)")
    serve.add_argument("--database-url", help="SQLAlchemy URL (default sqlite:///mailgate.db, "
                                              "env MAILGATE_DATABASE_URL)")
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING (env MAILGATE_LOG_LEVEL)")
    serve.add_argument("--trusted-network", action="store_true",
                       help="allow listening beyond loopback without TLS (env MAILGATE_TRUSTED_NETWORK=yes): "
                            "only behind a TLS-terminating proxy or on a network you trust")
    serve.set_defaults(func=_serve)

    keys = sub.add_parser("keys", help="the secret key: rotate it (runs beside the server, on its database)")
    ksub = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    rotate = ksub.add_parser("rotate", help="re-seal every stored secret under a new key; resumable")
    rotate.add_argument("--database-url", help="as for serve (env MAILGATE_DATABASE_URL)")
    rotate.add_argument("--retire", action="store_true",
                        help="drop keys no secret uses from the key file (when every replica has the new key)")
    rotate.set_defaults(func=_rotate_keys)

    providers = sub.add_parser("providers", parents=[common], help="manage providers")
    psub = providers.add_subparsers(dest="action", required=True, metavar="ACTION")
    ref_help = "the provider: providers/{id}, its id, or its name"

    p = psub.add_parser("create", parents=[common], help="check the credentials and store a provider")
    candidate.add_flags(p, with_type=True)
    p.add_argument("--validate-only", action="store_true", help="check everything, store nothing")
    p.set_defaults(handler=commands.create)

    p = psub.add_parser("list", parents=[common], help="list providers")
    p.add_argument("--filter", default="", help='e.g. \'state = STATE_RED AND campaign = "billing"\'')
    p.set_defaults(handler=commands.list_)

    p = psub.add_parser("get", parents=[common], help="show one provider")
    p.add_argument("ref", help=ref_help)
    p.set_defaults(handler=commands.get)

    p = psub.add_parser("update", parents=[common], help="change the fields given as flags")
    p.add_argument("ref", help=ref_help)
    candidate.add_flags(p, with_type=False)
    p.add_argument("--etag", default="", help="refuse (ABORTED) if the provider changed since")
    p.add_argument("--validate-only", action="store_true", help="check everything, store nothing")
    p.set_defaults(handler=commands.update)

    p = psub.add_parser("validate", parents=[common],
                        help="check a stored provider, or a candidate given as flags; stores nothing")
    p.add_argument("ref", nargs="?", help=ref_help + "; omit to check the candidate the flags describe")
    candidate.add_flags(p, with_type=True)
    p.set_defaults(handler=commands.validate)

    p = psub.add_parser("activate", parents=[common],
                        help="re-check a provider and set GREEN or RED; OAuth: print the sign-in URL")
    p.add_argument("ref", help=ref_help)
    p.set_defaults(handler=commands.activate)

    p = psub.add_parser("authorize", parents=[common],
                        help="finish an OAuth sign-in with the URL the browser was sent back to")
    p.add_argument("redirect_url", help="the whole address of the redirect (state and code)")
    p.set_defaults(handler=commands.authorize)

    p = psub.add_parser("delete", parents=[common], help="delete a provider and its secrets")
    p.add_argument("ref", help=ref_help)
    p.add_argument("--etag", default="", help="refuse (ABORTED) if the provider changed since")
    p.set_defaults(handler=commands.delete)

    p = psub.add_parser("events", parents=[common],
                        help="a provider's history, newest first: state changes, failed checks, reconnects, "
                             "token renewals, sign-ins")
    p.add_argument("ref", help=ref_help)
    p.add_argument("--type", help="only events of this type, e.g. STATE_CHANGED, RECONNECT, CHECK_FAILED")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50; 0: all)")
    p.set_defaults(handler=commands.events)

    p = sub.add_parser("drivers", parents=[common], help="list installed drivers, or show one's settings")
    p.add_argument("type", nargs="?", help="show this driver's settings schema")
    p.set_defaults(handler=commands.drivers)
    mail.add_commands(sub, common)
    inbound.add_commands(sub, common)
    tokens.add_commands(sub, common)
    return parser


def _global_options(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    """`suppress`: a subcommand's copy leaves the value alone unless given there, so it
    cannot undo a top-level `--server X`."""
    server = os.environ.get("MAILGATE_SERVER", "127.0.0.1:50051")
    parser.add_argument("--server", metavar="HOST:PORT",
                        default=argparse.SUPPRESS if suppress else server,
                        help=f"mailgate to talk to (env MAILGATE_SERVER; now {server})")
    parser.add_argument("--json", action="store_true",
                        default=argparse.SUPPRESS if suppress else False,
                        help="print protobuf JSON for programs; errors as JSON on stderr")


def main(argv: list[str] | None = None) -> int:
    from mailgate.client import MailgateClient, MailgateError

    from . import output
    from .candidate import UsageError

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help (0) or a usage error (2), already printed
        return done.code if isinstance(done.code, int) else EXIT_USAGE
    if args.command in ("serve", "keys"):
        return args.func(args)

    out, err = output.Stream(sys.stdout), output.Stream(sys.stderr)
    try:
        with MailgateClient(args.server) as mg:
            return args.handler(mg, args, out)
    except UsageError as e:
        err.print(f"mailgate: error: {e}")
        return EXIT_USAGE
    except MailgateError as e:
        if args.json:
            err.print(output.error_json(e))
        else:
            output.error(err, e, args.server)
        return EXIT_UNREACHABLE if e.code_name == "UNAVAILABLE" else EXIT_REFUSED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
