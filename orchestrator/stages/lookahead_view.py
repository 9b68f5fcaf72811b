"""decide-node's look-ahead prices (`policy.lookahead`), read from PostgreSQL every `refresh_seconds`.

The arithmetic is in `orchestrator.domain.lookahead`; this view feeds it:

- recent demand: the customer lines of the orders validate let through in
  the last `window_hours` (`validate_orders`: one row per order, the order as
  it stands with its address; a held, rejected or cancelled order is no
  demand to plan for), each sent where the order goes (the customer's
  address, or the store it is collected at), and whether its order ships
  complete;
- stock: what each node can promise of those SKUs now, from reserve's
  ledger (on hand less reserved less safety stock), as decide-node's own
  stock view reads it.

Policies can change while decide-node runs (a deployed policy, a shadow), so
the view asks for the policies in use at every refresh and prices for each
one that has look-ahead on (`prices_for`); `state` holds the prices of the
first (the active policy). While none has it on, nothing is read.

The prices are a moment stale, like the ledger decide-node reads: reserve is
the atomic check, and the prices only steer which node a plan prefers. The
LPs run in a worker thread (about a tenth of a second for a few hundred
SKUs), so decisions never wait for them. Until the first prices of a policy
with look-ahead on, the view is not ready, as `RiskView` is not before its
first read.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog

from orchestrator.domain.lookahead import NO_OPPORTUNITY, OpportunityCosts, Sale, lookahead_prices
from orchestrator.domain.network import NetworkView
from orchestrator.domain.policy import Policy
from orchestrator.runtime.metrics import RuntimeMetrics
from orchestrator.runtime.pause import sleep_unless
from orchestrator.runtime.views import cancel_task
from orchestrator.settings import Settings

#: Policies to price for: one policy, or a function giving those in use now (None entries ignored).
PolicySource = Policy | Callable[[], Iterable[Policy | None]]

# One row per customer line of a validated order in the window: where it goes and how many units.
# Lines the policy added (`addition` set) are the orchestrator's, not the customer's demand.
_RECENT_LINES = """
SELECT o.updated_at AS at, o.order_json -> 'delivery' AS delivery, o.order_json -> 'ship_to' AS ship_to,
       line ->> 'sku' AS sku, (line ->> 'quantity')::int AS units,
       coalesce((o.order_json ->> 'ship_complete')::boolean, false) AS ship_complete
FROM validate_orders AS o
CROSS JOIN LATERAL jsonb_array_elements(o.order_json -> 'lines') AS line
WHERE o.status = 'validated' AND o.updated_at >= $1 AND o.updated_at < $2
  AND coalesce(line -> 'addition', 'null'::jsonb) = 'null'::jsonb
"""

_AVAILABLE = """
SELECT node_id, sku, on_hand - reserved - safety_stock AS available FROM reserve_ledger
WHERE sku = ANY($1::text[]) AND on_hand - reserved - safety_stock > 0
"""

#: After a failed refresh the next try comes this soon (or at the period, if shorter); and while no
#: policy has look-ahead on, the view looks this often whether one has been deployed.
_RETRY_SECONDS = 5.0
_IDLE_SECONDS = 30.0


def _json(value: Any) -> Any:
    """asyncpg hands jsonb over as text unless a codec is set; accept both."""
    return json.loads(value) if isinstance(value, str) else value


def sale_of_row(row: asyncpg.Record | dict[str, Any], network: NetworkView) -> Sale | None:
    """Where one recent line went, as the pure module wants it (None: nowhere known)."""
    delivery = _json(row["delivery"]) or {}
    address = _json(row["ship_to"])
    store_id = delivery.get("pickup_store_id") or delivery.get("store_id")
    if delivery.get("kind") in ("bopis", "ship_to_store") and store_id:
        store = network.nodes.get(store_id)
        if store is not None:
            address = store.location.model_dump(mode="json")
    if not address or row["units"] is None or row["units"] <= 0:
        return None
    try:
        return Sale(
            latitude=float(address["latitude"]),
            longitude=float(address["longitude"]),
            postal_code=str(address.get("postal_code", "")),
            country=str(address["country"]),
            sku=str(row["sku"]),
            units=int(row["units"]),
            ship_complete=bool(row.get("ship_complete", False)),
        )
    except (KeyError, TypeError, ValueError):
        return None  # validate lets no such order through; a bad row must not stop the prices


def _pricing_key(policy: Policy) -> Hashable:
    """What of a policy the prices depend on: two policies alike in these share one computation."""
    return (
        policy.lookahead,
        policy.ship_from_store.enabled,
        tuple(sorted(policy.node_kind_handling_cost.items())),
        policy.default_unit_weight_kg,
    )


class LookaheadView:
    """decide-node's look-ahead prices (a View, for its life cycle): `prices_for(policy)` gives
    (node_id, sku) -> price per unit for a policy in use, `state` those of the first policy (the
    active one). Refreshed every `lookahead.refresh_seconds` over its own connection; a decision uses
    the latest prices, and a policy with look-ahead off always gets none (myopic sourcing)."""

    def __init__(self, policies: PolicySource, network: Callable[[], NetworkView]) -> None:
        self.name = "lookahead-prices"
        self.topic = ""
        self._policies = (lambda: (policies,)) if isinstance(policies, Policy) else policies
        self.network = network
        self.state: OpportunityCosts = NO_OPPORTUNITY
        #: When the prices were last computed, and from how many recent lines.
        self.refreshed_at: datetime | None = None
        self.lines_seen = 0
        self.log = structlog.get_logger("orchestrator.lookahead")
        self._prices: dict[Hashable, OpportunityCosts] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = not self._priced()
        self._metrics: RuntimeMetrics | None = None

    def bind_metrics(self, metrics: RuntimeMetrics) -> None:
        """Report refreshes to this process's metrics (the process binds its views' metrics)."""
        self._metrics = metrics

    def _priced(self) -> list[Policy]:
        """The policies in use with look-ahead on, the active one first."""
        return [p for p in self._policies() if p is not None and p.lookahead.enabled]

    @property
    def ready(self) -> bool:
        return self._ready

    def prices_for(self, policy: Policy) -> OpportunityCosts:
        """The latest prices for `policy` (none when its look-ahead is off or not priced yet)."""
        if not policy.lookahead.enabled:
            return NO_OPPORTUNITY
        return self._prices.get(_pricing_key(policy), NO_OPPORTUNITY)

    async def start(self, settings: Settings, stop: asyncio.Event) -> None:
        # Started even while no policy prices: one with look-ahead on may be deployed later.
        if self._task is None:
            self._task = asyncio.create_task(self._run(settings, stop), name="decide:lookahead-prices")

    async def close(self) -> None:
        await cancel_task(self._task)
        self._task = None

    async def refresh(self, conn: asyncpg.Connection, now: datetime | None = None) -> OpportunityCosts:
        """Read the window's demand and the ledger, and price for every policy in use with look-ahead
        on (in a worker thread); returns the first one's prices, also in `state`."""
        now = now or datetime.now(UTC)
        wanted = self._priced()
        if self._metrics is not None:
            self._metrics.lookahead_policies.set(len(wanted))
        if not wanted:
            self._prices, self.state, self._ready = {}, NO_OPPORTUNITY, True
            return self.state
        started = time.perf_counter()
        network = self.network()
        longest = max(p.lookahead.window_hours for p in wanted)
        rows = await conn.fetch(_RECENT_LINES, now - timedelta(hours=longest), now)
        sales = [(row["at"], sale) for row in rows if (sale := sale_of_row(row, network)) is not None]
        skus = sorted({sale.sku for _, sale in sales})
        stock_rows = await conn.fetch(_AVAILABLE, skus) if skus else []
        supply = {(r["node_id"], r["sku"]): int(r["available"]) for r in stock_rows}
        prices: dict[Hashable, OpportunityCosts] = {}
        for policy in wanted:
            key = _pricing_key(policy)
            if key not in prices:
                prices[key] = await asyncio.to_thread(self._price, policy, sales, supply, network, now)
        self._prices = prices
        self.state = prices[_pricing_key(wanted[0])]
        self.refreshed_at = now
        self.lines_seen = len(sales)
        self._ready = True
        if self._metrics is not None:
            m = self._metrics
            m.lookahead_refreshes.labels("ok").inc()
            m.lookahead_refresh_seconds.observe(time.perf_counter() - started)
            m.lookahead_computed_at.set(now.timestamp())
            m.lookahead_window_lines.set(len(sales))
            m.lookahead_priced_positions.set(sum(1 for price in self.state.values() if price > 0))
        return self.state

    @staticmethod
    def _price(
        policy: Policy,
        sales: Sequence[tuple[datetime, Sale]],
        supply: dict[tuple[str, str], int],
        network: NetworkView,
        now: datetime,
    ) -> OpportunityCosts:
        window = policy.lookahead.window_hours
        since = now - timedelta(hours=window)
        # The whole window, even while the history is shorter (a new installation): demand is then
        # under- rather than over-estimated, and the prices err towards myopic sourcing.
        return lookahead_prices(
            [sale for at, sale in sales if at >= since],
            supply,
            network=network,
            policy=policy,
            now=now,
            observed_hours=window,
        )

    async def _run(self, settings: Settings, stop: asyncio.Event) -> None:
        conn: asyncpg.Connection | None = None
        while not stop.is_set():
            wanted = self._priced()
            wait = min((p.lookahead.refresh_seconds for p in wanted), default=_IDLE_SECONDS)
            try:
                if wanted and (conn is None or conn.is_closed()):
                    conn = await asyncpg.connect(settings.database_url, command_timeout=30)
                if conn is not None and wanted:
                    await self.refresh(conn)
                else:
                    self._prices, self.state, self._ready = {}, NO_OPPORTUNITY, True
                    if self._metrics is not None:
                        self._metrics.lookahead_policies.set(0)
            except Exception as exc:  # the database away is no reason to stop: decisions use the last prices
                self.log.warning("look-ahead prices refresh failed; retrying", error=repr(exc))
                if self._metrics is not None:
                    self._metrics.lookahead_refreshes.labels("failed").inc()
                if conn is not None:
                    conn.terminate()
                conn = None
                # Soon, not a whole period later: until the first prices the stage is not ready.
                wait = min(wait, _RETRY_SECONDS)
            await sleep_unless(stop, wait)
        if conn is not None:
            await conn.close()


__all__ = ["LookaheadView", "PolicySource", "sale_of_row"]
