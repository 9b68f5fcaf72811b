"""The pure core of the decide-node stage: network view, routing policy, sourcing and its explanation.

Nothing here touches Kafka or a database; every function takes what it needs
and returns a value, so the decision is fast to test and replay.
"""

from orchestrator.native import native_path

# The compiled sourcing module, when it was built from the sourcing.py beside it (orchestrator/native.py).
__path__ = native_path(__path__, __name__)
