-- returns: one row per return the OMS authorised. The return's whole state
-- (its lines, resolution, where the goods are, the refund or the replacement)
-- is one JSON document folded by the pure core (orchestrator/domain/returns.py);
-- the columns beside it are what queries look for.
CREATE TABLE returns_cases (
    return_id     text        PRIMARY KEY,
    order_id      text        NOT NULL,
    state         text        NOT NULL,   -- the state last published to the OMS
    case_json     jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- A return may not take more units of a line than the order's other returns left.
CREATE INDEX returns_cases_order ON returns_cases (order_id);
