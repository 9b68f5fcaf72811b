"""The pure core of the decide-node stage: network view, routing policy, sourcing and its explanation.

Nothing here touches Kafka or a database; every function takes what it needs
and returns a value, so the decision is fast to test and replay.
"""
