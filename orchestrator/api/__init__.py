"""The read-only view of an order for customer-service tools: queries, the HTTP API, the timeline text.

`queries` reads status-sync's event store and projection and decide-node's
plans; `app` serves them over HTTP. Nothing here writes.
"""
