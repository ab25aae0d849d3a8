"""The living dev fleet: :mod:`tokenfleet.fleetsim`'s cars, tanks and site driven in scaled real
time through the real publishing paths (``tokenfleet devfleet``; ``make dev`` runs it)."""
