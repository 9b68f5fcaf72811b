-- release: shipments reserve gave back by name (`reservation.released.v1` with `shipment_ids`: a
-- repair undone because the work it replaced shipped after all). The repair's confirmation comes
-- from another of reserve's input partitions and may reach release after the give-back: a
-- shipment named here is never released.
CREATE TABLE release_given_back (
    shipment_id    text        PRIMARY KEY,
    order_id       text        NOT NULL,
    reason         text        NOT NULL,
    given_back_at  timestamptz NOT NULL
);
