"""The node agent (``tokenfleet agent``): publishes a vehicle's signals as annotations on its own
Node, only on a meaningful change (:mod:`.deadband`) or as a heartbeat. Sources are pluggable
(:mod:`.source`); the write is a strategic-merge patch of ``metadata.annotations`` only."""
