"""Physical models of a living fleet, in virtual time (no wall clock, no Kubernetes).

Shared by ``tokenfleet simulate`` and meant for the local living fleet (``make dev``):

* :mod:`~tokenfleet.fleetsim.cars`: parked EVs arriving, plugging in, charging at charger power
  minus the compute draw toward a target SoC, departing and returning with a trip's energy spent;
  battery and compute temperatures follow load and ambient (vectorised over a fleet).
* :mod:`~tokenfleet.fleetsim.schedule`: seeded stay patterns (arrival/departure distributions).
* :mod:`~tokenfleet.fleetsim.tanks`: an immersion tank's coolant loop following its IT load.
* :mod:`~tokenfleet.fleetsim.site`: ambient temperature, time-of-use prices, site power cap with
  demand-response events.
* :mod:`~tokenfleet.fleetsim.ageing`: NREL BLAST-Lite cell models (capacity fade from SoC and
  temperature traces).

Every model is deterministic for a given seed; time is epoch seconds passed in by the caller.
"""
