-- reserve: nodes closed now (from network.updates.v1). Their stock does not count as available to the
-- waiting lines: releasing a line to a closed node only has it back-ordered again.
CREATE TABLE reserve_closed_nodes (
    node_id  text        PRIMARY KEY,
    since    timestamptz NOT NULL
);
