"""tokenfleet: one inference fleet of immersion-cooled racks and parked EVs, run by a kopf operator."""

__version__ = "0.1.0"
GROUP = "tokenfleet.io"
VERSION = "v1alpha1"
