"""Telemetry: the vehicle Node contract, node parsing, and the immersion-tank Redfish client.

Modules: :mod:`.problems` (why a field is unknown), :mod:`.vehicle` (annotation contract,
:class:`~.vehicle.VehicleReading`), :mod:`.node` (:class:`~.node.NodeInfo`), :mod:`.immersion`
(Redfish client, :class:`~.immersion.TankReading`, headroom math), :mod:`.metrics`.
Everything but :mod:`.immersion`'s client and :mod:`.metrics` is pure.
"""
