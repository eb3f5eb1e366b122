"""The fault harness itself: throwaway servers really stop and come back."""

from __future__ import annotations

import asyncpg
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.faults.servers import PostgresServer, RedisServer


async def test_throwaway_redis_stops_and_comes_back_on_its_port(redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await client.ping()
        redis_server.stop()
        with pytest.raises(RedisConnectionError):
            await client.ping()
    finally:
        await client.aclose()
    redis_server.start()
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await client.ping()
    finally:
        await client.aclose()


async def test_throwaway_postgres_crashes_and_restarts_with_its_data(
    pg_server: PostgresServer,
) -> None:
    url = pg_server.create_database().replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(url)
    await conn.execute("CREATE TABLE t (x int)")
    await conn.execute("INSERT INTO t VALUES (1)")
    pg_server.stop("immediate")
    with pytest.raises((OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
        await conn.fetchval("SELECT 1")
    pg_server.start()
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT x FROM t") == 1
        other = await asyncpg.connect(url)
        assert pg_server.terminate_connections(url.rsplit("/", 1)[1]) >= 1
        with pytest.raises((OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
            await other.fetchval("SELECT 1")
    finally:
        await conn.close()
