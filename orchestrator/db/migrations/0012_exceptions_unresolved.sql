-- exceptions: the cases not yet resolved, read every few seconds by every exceptions instance for
-- the orchestrator_exceptions_unresolved gauges. Resolved cases are nearly all of the table and
-- only grow, so the index holds just the others: the read stays as small as what is unresolved.
CREATE INDEX exceptions_cases_unresolved ON exceptions_cases (state, opened_at) WHERE state <> 'resolved';
