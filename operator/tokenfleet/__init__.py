"""tokenfleet: immersion-cooled racks and parked EVs as one inference fleet, run by kopf."""

__version__ = "0.1.0"
GROUP = "tokenfleet.io"
VERSION = "v1alpha1"
