"""reserve: giving held stock back (an order cancelled or re-planned, a repair undone).

The reservations go to `released`, the ledger's `reserved` comes down by what they held, and a
shipment given back whole before it shipped frees its slot of its node's day.
"""

from __future__ import annotations

import asyncpg


async def give_back_slots(conn: asyncpg.Connection, shipment_ids: set[str]) -> None:
    """A shipment given back whole before it shipped (the order cancelled, re-planned, or the shipment
    repaired away) frees its slot of its node's day."""
    await conn.execute(
        "UPDATE reserve_node_load l SET shipments = GREATEST(l.shipments - g.n, 0)"
        " FROM (SELECT node_id, capacity_day, count(*) AS n FROM ("
        "   SELECT shipment_id, min(node_id) AS node_id, min(capacity_day) AS capacity_day"
        "   FROM reserve_reservations WHERE shipment_id = ANY($1::text[]) AND capacity_day IS NOT NULL"
        "   GROUP BY shipment_id HAVING bool_and(status = 'released')) AS whole"
        "  GROUP BY node_id, capacity_day) AS g"
        " WHERE l.node_id = g.node_id AND l.day = g.capacity_day",
        sorted(shipment_ids),
    )


async def give_back_order(conn: asyncpg.Connection, order_id: str) -> list[asyncpg.Record]:
    """Give back every active reservation of the order; returns them (shipment_id, line_id, ...)."""
    return await _give_back(conn, "order_id = $1", order_id)


async def give_back_shipments(conn: asyncpg.Connection, shipment_ids: list[str]) -> list[asyncpg.Record]:
    """Give back every active reservation of these shipments; returns them."""
    return await _give_back(conn, "shipment_id = ANY($1::text[])", shipment_ids)


async def _give_back(conn: asyncpg.Connection, which: str, key: object) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "UPDATE reserve_reservations SET status = 'released', released_at = now()"
        f" WHERE {which} AND status = 'active' RETURNING node_id, sku, quantity, shipment_id, line_id",
        key,
    )
    for r in rows:
        await conn.execute(
            "UPDATE reserve_ledger SET reserved = reserved - $3, updated_at = now()"
            " WHERE node_id = $1 AND sku = $2",
            r["node_id"],
            r["sku"],
            r["quantity"],
        )
    if rows:
        await give_back_slots(conn, {r["shipment_id"] for r in rows})
    return rows


__all__ = ["give_back_order", "give_back_shipments", "give_back_slots"]
