"""`mailgate`: run the server, or manage providers on a running one."""
from __future__ import annotations

import argparse
import asyncio
import sys


def _serve(args: argparse.Namespace) -> int:
    from mailgate.server import app, logs
    from mailgate.server.config import Settings

    settings = Settings()
    if args.listen:
        settings.listen = args.listen
    if args.database_url:
        settings.database_url = args.database_url
    logs.configure(args.log_level or settings.log_level)
    asyncio.run(app.serve(settings))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailgate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--listen", help="host:port (default 127.0.0.1:50051, env MAILGATE_LISTEN)")
    serve.add_argument("--database-url", help="SQLAlchemy URL (default sqlite:///mailgate.db, "
                                              "env MAILGATE_DATABASE_URL)")
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING (env MAILGATE_LOG_LEVEL)")
    serve.set_defaults(func=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
