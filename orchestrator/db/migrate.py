"""Ordered SQL migrations, applied once each, safe to run concurrently and twice.

Files are `orchestrator/db/migrations/NNNN_name.sql`, applied in number
order, each in its own transaction, recorded in `schema_migrations`. An
advisory lock keeps two processes from applying the same file at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x0C4E57A7  # arbitrary constant shared by every orchestrator process


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(folder: Path | None = None) -> list[Migration]:
    root = folder or Path(str(resources.files("orchestrator.db") / "migrations"))
    found: list[Migration] = []
    for path in sorted(root.glob("*.sql")):
        m = _MIGRATION_NAME.match(path.name)
        if m is None:
            raise ValueError(f"migration file {path.name} must be named NNNN_lower_snake.sql")
        found.append(Migration(int(m.group(1)), m.group(2), path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two migrations share a number in {root}")
    return sorted(found, key=lambda m: m.version)


async def migrate(database_url: str, folder: Path | None = None) -> list[str]:
    """Apply every migration not yet applied; return the names applied now."""
    migrations = load_migrations(folder)
    conn = await asyncpg.connect(database_url)
    applied_now: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for m in migrations:
                if m.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(m.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name
                    )
                applied_now.append(f"{m.version:04d}_{m.name}")
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        await conn.close()
    return applied_now
