"""The `jobql` command: serve | worker | migrate | keys create|list|revoke."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from jobql.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobql", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API (embedded default: SQLite, inline worker)")
    serve.add_argument("--host", help="bind address (default 127.0.0.1, or JOBQL_HOST)")
    serve.add_argument("--port", type=int, help="port (default 8000, or JOBQL_PORT)")

    sub.add_parser("worker", help="run a worker process (scaled deployments)")
    sub.add_parser("migrate", help="apply database migrations")

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create a caller and print its new key")
    create.add_argument("--name", required=True)
    create.add_argument("--tier", default="standard")
    keys.add_parser("list", help="list keys (prefix, name, tier, revoked)")
    revoke = keys.add_parser("revoke", help="revoke the key with this prefix")
    revoke.add_argument("prefix")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings()
    if args.command == "serve":
        return serve_command(settings, args.host, args.port)
    if args.command == "worker":
        return asyncio.run(worker_command(settings))
    if args.command == "migrate":
        return asyncio.run(migrate_command(settings))
    return asyncio.run(keys_command(settings, args))


def serve_command(settings: Settings, host: str | None, port: int | None) -> int:
    import uvicorn

    from jobql.app import create_app

    updates = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = settings.model_copy(update=updates)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
    return 0


async def worker_command(settings: Settings) -> int:
    from jobql.runtime import open_runtime

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with open_runtime(settings, with_worker=True) as runtime:
        assert runtime.worker is not None
        logging.getLogger("jobql").info("worker %s running", runtime.worker.worker_id)
        await stop.wait()
    return 0


async def migrate_command(settings: Settings) -> int:
    from jobql.repositories.database import create_engine
    from jobql.repositories.migrate import upgrade

    engine = create_engine(settings.database_url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    print("migrated", file=sys.stderr)
    return 0


async def keys_command(settings: Settings, args: argparse.Namespace) -> int:
    from jobql.repositories.database import create_engine, create_session_factory
    from jobql.repositories.migrate import upgrade
    from jobql.services.auth import KeyService

    engine = create_engine(settings.database_url)
    try:
        if settings.migrate_on_start:
            await upgrade(engine)
        service = KeyService(create_session_factory(engine))
        if args.keys_command == "create":
            try:
                _, key = await service.create(args.name, args.tier)
            except ValueError as exc:
                print(f"jobql: {exc}", file=sys.stderr)
                return 2
            print(key)
        elif args.keys_command == "list":
            for prefix, name, tier, revoked in await service.list():
                print(f"{prefix}…\t{name}\t{tier}\t{'revoked' if revoked else 'active'}")
        else:
            count = await service.revoke(args.prefix)
            print(f"revoked {count} key(s)", file=sys.stderr)
            return 0 if count else 1
    finally:
        await engine.dispose()
    return 0


if __name__ == "__main__":  # pragma: no cover
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
