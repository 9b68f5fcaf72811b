-- exceptions: one case per exception (what its playbook tried and how it
-- ended), and the manual-review queue people work through.

CREATE TABLE exceptions_cases (
    exception_id    text        PRIMARY KEY,
    order_id        text        NOT NULL,
    kind            text        NOT NULL,
    payload         jsonb       NOT NULL,   -- the ExceptionRaised that opened the case
    state           text        NOT NULL CHECK (state IN ('open', 'resolved', 'in_review')),
    -- [{action, succeeded, detail, promised_delivery_date}], oldest first.
    actions_tried   jsonb       NOT NULL DEFAULT '[]',
    -- The action the case waits on (an answer from the order path); null when waiting on nothing.
    current_action  text,
    opened_at       timestamptz NOT NULL,
    resolved_at     timestamptz,
    resolution      text
);
CREATE INDEX exceptions_cases_order ON exceptions_cases (order_id);

-- The visible manual-review queue: open while resolved_at is null.
CREATE TABLE exceptions_review_queue (
    exception_id  text        PRIMARY KEY REFERENCES exceptions_cases (exception_id),
    order_id      text        NOT NULL,
    kind          text        NOT NULL,
    reason        text        NOT NULL,
    queued_at     timestamptz NOT NULL,
    resolved_at   timestamptz
);
CREATE INDEX exceptions_review_queue_open ON exceptions_review_queue (queued_at) WHERE resolved_at IS NULL;
