"""Simulators for the local fleet: a Redfish-shaped immersion tank endpoint (:mod:`.tank`)."""
