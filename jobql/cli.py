"""The `jobql` command: serve | worker | migrate | keys … | usage | prune | schema
print|possible-types."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import signal
import sys
from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from jobql.observability.logging import configure_logging
from jobql.services.limits import LimitOverrides
from jobql.settings import Settings

if TYPE_CHECKING:
    from jobql.events.bus import BroadcastBus
    from jobql.services.usage_report import UsageReport, UsageRow, UsageTotals


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobql", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API (embedded default: SQLite, inline worker)")
    serve.add_argument("--host", help="bind address (default 127.0.0.1, or JOBQL_HOST)")
    serve.add_argument("--port", type=int, help="port (default 8000, or JOBQL_PORT)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="API processes sharing the port (PostgreSQL and a redis:// or postgres:// bus only)",
    )

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
    limits = keys.add_parser(
        "set-limits", help="override the tier's limits for the caller owning this key"
    )
    limits.add_argument("prefix", help="the key's prefix, as `jobql keys list` shows it")
    limits.add_argument("--rate", metavar="N/SECONDS", help="submits per window, e.g. 5/60")
    limits.add_argument("--cost-per-day", type=float, metavar="USD", help="daily cost cap")
    limits.add_argument("--max-active", type=int, metavar="N", help="queued + running jobs")
    limits.add_argument("--reset", action="store_true", help="back to the tier's defaults")

    usage = sub.add_parser(
        "usage",
        help="a caller's usage (jobs, tokens, cost) over UTC days, as the v2 usage query "
        "answers it",
    )
    usage.add_argument(
        "--key", required=True, metavar="PREFIX", help="the key's prefix, as `jobql keys list`"
    )
    usage.add_argument(
        "--from", dest="first", required=True, type=date.fromisoformat, metavar="YYYY-MM-DD"
    )
    usage.add_argument(
        "--to",
        dest="last",
        required=True,
        type=date.fromisoformat,
        metavar="YYYY-MM-DD",
        help="the last UTC day, included",
    )
    usage.add_argument(
        "--group-by",
        type=parse_usage_groups,
        default=(),
        metavar="day,task,model",
        help="group rows by any of day, task, model (default: one row)",
    )
    usage.add_argument("--json", action="store_true", help="JSON shaped like the v2 answer")

    prune = sub.add_parser(
        "prune",
        help="compact the event logs and delete the finished jobs past their retention "
        "windows now (workers also do it every JOBQL_PRUNE_EVERY_SECONDS)",
    )
    prune.add_argument("--dry-run", action="store_true", help="only count what would be removed")

    schema = sub.add_parser("schema", help="print what client tooling needs").add_subparsers(
        dest="schema_command", required=True
    )
    for name, what in (
        ("print", "the schema as SDL (for codegen)"),
        (
            "possible-types",
            "the interfaces and unions with their object types, as JSON "
            "(Apollo Client's InMemoryCache possibleTypes)",
        ),
    ):
        command = schema.add_parser(name, help=what)
        command.add_argument(
            "--api-version", default="v1", metavar="vN", help="the API version (default v1)"
        )

    args = parser.parse_args(argv)
    if args.command == "schema":
        return schema_command(args.schema_command, args.api_version)
    settings = Settings()
    configure_logging(
        settings.log_level,
        json=settings.log_format == "json",
        include_content=settings.log_content,
    )
    if args.command in ("serve", "worker"):
        from jobql.runtime import ConfigError, check_configuration

        try:
            check_configuration(
                settings,
                with_worker=args.command == "worker" or settings.inline_worker,
                serving=args.command == "serve",
            )
        except ConfigError as exc:
            print(f"jobql: {exc}", file=sys.stderr)
            return 2
    if args.command == "serve":
        return serve_command(settings, args.host, args.port, args.workers)
    if args.command == "worker":
        return asyncio.run(worker_command(settings))
    if args.command == "migrate":
        return asyncio.run(migrate_command(settings))
    if args.command == "usage":
        return asyncio.run(usage_command(settings, args))
    if args.command == "prune":
        return asyncio.run(prune_command(settings, dry_run=args.dry_run))
    return asyncio.run(keys_command(settings, args))


def schema_command(what: str, api_version: str) -> int:
    from jobql.schema.exports import possible_types_json, sdl
    from jobql.schema.hardening import SchemaOptions
    from jobql.schema.registry import version

    try:
        schema = version(api_version).build(SchemaOptions())
    except KeyError as exc:
        print(f"jobql: {exc.args[0]}", file=sys.stderr)
        return 2
    sys.stdout.write(sdl(schema) if what == "print" else possible_types_json(schema))
    return 0


def serve_command(settings: Settings, host: str | None, port: int | None, workers: int = 1) -> int:
    import uvicorn

    updates = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = settings.model_copy(update=updates)
    if workers > 1:
        return serve_processes(settings, workers)

    from jobql.app import create_app
    from jobql.runtime import freeze_long_lived_objects

    app = create_app(settings)
    freeze_long_lived_objects()
    # log_config=None: uvicorn's own loggers go through ours (JSON, request ids).
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        ws_max_size=settings.ws_max_message_bytes,
        # Open HTTP streams (SSE, multipart) would hold the shutdown until their clients
        # leave: past the grace they end with a resumable SERVICE_UNAVAILABLE instead.
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
    )
    return 0


def multiprocess_problem(settings: Settings) -> str | None:
    """Why this configuration cannot run as several processes, if it cannot."""
    if not settings.database_url.startswith("postgresql"):
        return (
            "--workers needs PostgreSQL: SQLite has one writer at a time, so the embedded "
            "default runs as one process (set JOBQL_DATABASE_URL=postgresql+asyncpg://...)"
        )
    if settings.broadcast_url.startswith("memory"):
        return (
            "--workers needs a shared event bus: memory:// reaches only its own process "
            "(set JOBQL_BROADCAST_URL=redis://... or postgres://...)"
        )
    return None


def serve_processes(settings: Settings, workers: int) -> int:
    """Several API processes on one port (uvicorn's process manager): each runs its own
    event loop (and inline worker) on its own core. Migrations and the development key are
    done once, here, before the processes start."""
    import os

    import uvicorn

    if (problem := multiprocess_problem(settings)) is not None:
        print(f"jobql: {problem}", file=sys.stderr)
        return 2
    asyncio.run(prepare_processes(settings))
    # The processes read their settings from the environment, like this one did.
    os.environ.update(
        JOBQL_HOST=settings.host,
        JOBQL_PORT=str(settings.port),
        JOBQL_MIGRATE_ON_START="false",
        JOBQL_CREATE_DEV_KEY="false",
    )
    uvicorn.run(
        "jobql.app:create_app_in_process",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        log_config=None,
        ws_max_size=settings.ws_max_message_bytes,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
    )
    return 0


async def prepare_processes(settings: Settings) -> None:
    from jobql.app import announce_dev_key
    from jobql.repositories.database import create_engine, create_session_factory
    from jobql.repositories.migrate import upgrade
    from jobql.services.auth import KeyService

    engine = create_engine(settings.database_url)
    try:
        if settings.migrate_on_start:
            await upgrade(engine)
        keys = KeyService(create_session_factory(engine))
        if settings.create_dev_key and not await keys.any_key_exists():
            _, key = await keys.create("development")
            announce_dev_key(key, settings)
    finally:
        await engine.dispose()


async def worker_command(settings: Settings) -> int:
    from jobql.runtime import freeze_long_lived_objects, open_runtime

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with open_runtime(settings, with_worker=True) as runtime:
        assert runtime.worker is not None
        freeze_long_lived_objects()
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
    bus = None
    try:
        if settings.migrate_on_start:
            await upgrade(engine)
        if args.keys_command in ("revoke", "set-limits"):
            bus = await open_bus_for_publishing(settings)
        service = KeyService(create_session_factory(engine), bus=bus)
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
        elif args.keys_command == "set-limits":
            try:
                overrides = parse_limit_overrides(args.rate, args.cost_per_day, args.max_active)
            except ValueError as exc:
                print(f"jobql: {exc}", file=sys.stderr)
                return 2
            count = await service.set_limits(args.prefix, overrides, clear=args.reset)
            print(f"updated {count} caller(s)", file=sys.stderr)
            if count:
                explain_propagation(settings, bus)
            return 0 if count else 1
        else:
            count = await service.revoke(args.prefix)
            print(f"revoked {count} key(s)", file=sys.stderr)
            if count:
                explain_propagation(settings, bus)
            return 0 if count else 1
    finally:
        if bus is not None:
            await bus.disconnect()
        await engine.dispose()
    return 0


async def prune_command(settings: Settings, *, dry_run: bool) -> int:
    """Prune everything past its window now (in batches, as workers do), or with
    ``dry_run`` count it; print the counts either way."""
    from jobql.models.base import utcnow
    from jobql.repositories.database import (
        create_engine,
        create_read_session_factory,
        create_session_factory,
    )
    from jobql.repositories.jobs import SqlJobStore
    from jobql.repositories.migrate import upgrade
    from jobql.services.retention import RetentionPolicy, prune_pass

    engine = create_engine(settings.database_url)
    try:
        if settings.migrate_on_start:
            await upgrade(engine)
        store = SqlJobStore(create_session_factory(engine), create_read_session_factory(engine))
        policy = RetentionPolicy.from_settings(settings)
        now = utcnow()
        if dry_run:
            counts = await store.prune_preview(policy, now)
        else:
            counts = await prune_pass(
                store,
                policy,
                now,
                batch_size=settings.prune_batch_size,
                pause_seconds=settings.prune_pause_seconds,
            )
            await store.reclaim_space()
    finally:
        await engine.dispose()
    verb = "would remove" if dry_run else "removed"
    print(
        f"{verb}: jobs compacted {counts.jobs_compacted}, events deleted "
        f"{counts.events_deleted}, jobs deleted {counts.jobs_deleted}"
    )
    return 0


def parse_usage_groups(text: str) -> tuple[str, ...]:
    """`day,task,model` (any of them, in any order) as UsageGroup values."""
    from jobql.services.usage_report import UsageGroup

    names = tuple(name.strip().lower() for name in text.split(",") if name.strip())
    known = {group.value for group in UsageGroup}
    if unknown := [name for name in names if name not in known]:
        raise argparse.ArgumentTypeError(
            f"unknown group {', '.join(unknown)} (choose from day, task, model)"
        )
    return names


async def usage_command(settings: Settings, args: argparse.Namespace) -> int:
    from jobql.errors import InvalidInput, ServiceUnavailable
    from jobql.outages import is_outage
    from jobql.repositories.database import create_engine, create_session_factory
    from jobql.repositories.migrate import upgrade
    from jobql.services.unavailable import root_cause_name
    from jobql.services.usage_report import UsageGroup, UsageReportService

    engine = create_engine(settings.database_url)
    try:
        if settings.migrate_on_start:
            await upgrade(engine)
        service = UsageReportService(create_session_factory(engine))
        owners = await service.principals_with_key_prefix(args.key.rstrip("…"))
        if len(owners) != 1:
            problem = "no key has" if not owners else f"{len(owners)} callers have keys with"
            print(
                f"jobql: {problem} the prefix {args.key!r} (see `jobql keys list`)", file=sys.stderr
            )
            return 1
        groups = [UsageGroup(name) for name in args.group_by]
        report = await service.report(owners[0], args.first, args.last, groups)
    except Exception as exc:
        if not is_outage(exc):
            raise
        print(f"jobql: the database cannot be reached ({root_cause_name(exc)})", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()
    if isinstance(report, InvalidInput):
        print(f"jobql: {report.message}", file=sys.stderr)
        return 2
    if isinstance(report, ServiceUnavailable):
        print("jobql: the database cannot be reached; try again", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(usage_json(report), indent=2))
    else:
        print(usage_table(report))
    return 0


def usage_json(report: UsageReport) -> dict[str, Any]:
    """The report in the shape of the v2 `usage` answer (`... on V2UsageReport`)."""
    return {
        "from": report.window.first.isoformat(),
        "to": report.window.last.isoformat(),
        "groupBy": [group.name for group in report.group_by],
        "rows": [
            {
                "day": row.day.isoformat() if row.day is not None else None,
                "task": None
                if row.task is None
                else {"name": row.task.name, "apiVersion": row.task.api_version},
                "model": None
                if row.model is None
                else {
                    "provider": row.model.provider,
                    "name": row.model.name,
                    "version": row.model.version,
                },
                **_totals_json(row.totals),
            }
            for row in report.rows
        ],
        "total": _totals_json(report.total),
    }


def _totals_json(totals: UsageTotals) -> dict[str, Any]:
    from jobql.schema.v2.money import CURRENCY, format_micros

    return {
        "jobs": {
            "total": totals.jobs,
            "succeeded": totals.succeeded,
            "failed": totals.failed,
            "cancelled": totals.cancelled,
        },
        "inputTokens": totals.input_tokens,
        "outputTokens": totals.output_tokens,
        "cost": {"amount": format_micros(totals.cost_micros), "currency": CURRENCY},
    }


def usage_table(report: UsageReport) -> str:
    """The report as aligned columns: the group keys, then the numbers, then the total."""
    from jobql.schema.v2.money import format_micros
    from jobql.services.usage_report import UsageGroup

    keys = [group.value for group in report.group_by]
    header = [*keys, "jobs", "succeeded", "failed", "cancelled", "input", "output", "cost_usd"]

    def numbers(totals: UsageTotals) -> list[str]:
        return [
            str(totals.jobs),
            str(totals.succeeded),
            str(totals.failed),
            str(totals.cancelled),
            str(totals.input_tokens),
            str(totals.output_tokens),
            format_micros(totals.cost_micros),
        ]

    def key_cells(row: UsageRow) -> list[str]:
        cells = {
            UsageGroup.DAY.value: row.day.isoformat() if row.day else "",
            UsageGroup.TASK.value: f"{row.task.api_version}.{row.task.name}" if row.task else "",
            UsageGroup.MODEL.value: (
                f"{row.model.provider}/{row.model.name}@{row.model.version}" if row.model else ""
            ),
        }
        return [cells[key] for key in keys]

    if keys:
        lines = [header, *([*key_cells(row), *numbers(row.totals)] for row in report.rows)]
        lines.append(["total", *[""] * (len(keys) - 1), *numbers(report.total)])
    else:  # no grouping: the total is the one row
        lines = [header, numbers(report.total)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    title = f"usage {report.window.first.isoformat()} .. {report.window.last.isoformat()} (UTC)"
    body = [
        "  ".join(
            cell.ljust(width) if i < len(keys) else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    ]
    return "\n".join([title, *body])


# How long `jobql keys revoke` waits for the event bus before it gives up telling the
# running servers (the change is in the database either way).
BUS_CONNECT_SECONDS = 5.0


async def open_bus_for_publishing(settings: Settings) -> BroadcastBus | None:
    """The event bus the API processes listen on, to tell them about a revoked key at once;
    None on memory:// (it reaches no other process) or when it cannot be reached."""
    from jobql.events.bus import BroadcastBus

    if settings.broadcast_url.startswith("memory"):
        return None
    bus = BroadcastBus(settings.broadcast_url)
    try:
        async with asyncio.timeout(BUS_CONNECT_SECONDS):
            await bus.connect()
    except Exception as exc:
        print(f"jobql: cannot reach the event bus ({exc!r})", file=sys.stderr)
        await bus.disconnect()
        return None
    return bus


def explain_propagation(settings: Settings, bus: BroadcastBus | None) -> None:
    """Say when running servers will see the change."""
    if bus is not None and bus.publish_failures == 0:
        print("running servers were told through the event bus", file=sys.stderr)
    elif settings.broadcast_url.startswith("memory"):
        print(
            "the memory:// bus reaches no other process: a running server sees this within "
            f"{settings.key_cache_fallback_seconds:g} s (JOBQL_KEY_CACHE_FALLBACK_SECONDS)",
            file=sys.stderr,
        )
    else:
        print(
            "jobql: the event bus could not be told; running servers see this within "
            f"{settings.key_cache_seconds:g} s (JOBQL_KEY_CACHE_SECONDS)",
            file=sys.stderr,
        )


def parse_limit_overrides(
    rate: str | None, cost_per_day: float | None, max_active: int | None
) -> LimitOverrides:
    rate_limit = window = None
    if rate is not None:
        count, _, seconds = rate.partition("/")
        if not (count.isdigit() and seconds.isdigit() and int(count) > 0 and int(seconds) > 0):
            raise ValueError("--rate must look like 5/60 (requests/seconds)")
        rate_limit, window = int(count), int(seconds)
    if cost_per_day is not None and cost_per_day < 0:
        raise ValueError("--cost-per-day must not be negative")
    if max_active is not None and max_active < 1:
        raise ValueError("--max-active must be at least 1")
    return LimitOverrides(
        rate_limit=rate_limit,
        rate_window_seconds=window,
        daily_cost_cap_micros=None if cost_per_day is None else round(cost_per_day * 1_000_000),
        max_active_jobs=max_active,
    )


if __name__ == "__main__":  # pragma: no cover
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
