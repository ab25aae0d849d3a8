"""Batch inference (InferenceBatch): input parsing, the pure dispatch core, the store layout and
the ``tokenfleet dispatcher`` process.

:mod:`~tokenfleet.batch.requests` and :mod:`~tokenfleet.batch.core` are pure (no I/O, clock
injected); :mod:`~tokenfleet.batch.runner` drives one batch against the object store and the
job's replicas; :mod:`~tokenfleet.batch.main` is the process.
"""
