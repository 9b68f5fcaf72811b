"""The live simulation behind `make run`: simulated OMS, nodes and carriers that
talk to the orchestrator only through the public topics, and the terminal view
that watches them.

Each simulator is a pure core that says what a real system would do next
(`oms`, `nodes`, `carriers`) and a thin process around it (`processes`) that
consumes and produces Kafka records; `driver` starts everything and `view`
draws what `tally` counts.
"""
