"""Reaching the services the peers need; blocking helpers for check() and prepare()."""

from __future__ import annotations

from benchmarks.systems._base import PG_ADMIN_URL, REDIS_URL, Skip


def redis_fresh() -> None:
    """Ping Redis and empty the benchmark database (only that one)."""
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
        client.ping()
    except Exception as exc:
        raise Skip(f"Redis not reachable at {REDIS_URL} ({exc})") from exc
    client.flushdb()
    client.close()


def pg_ping() -> None:
    try:
        import psycopg

        psycopg.connect(PG_ADMIN_URL, connect_timeout=3).close()
    except Exception as exc:
        raise Skip(f"PostgreSQL not reachable at 127.0.0.1:5432 ({exc})") from exc


def pg_recreate(db: str) -> None:
    """Drop and create the database ``db`` (benchmark databases only)."""
    import psycopg

    assert db.startswith("wm_async_bench"), db
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{db}"')
