"""Support for the placement benchmark and tests, not shipped in the wheel: seeded synthetic fleets
and event chains (:mod:`~placementkit.synthetic`) and a kube-scheduler-like baseline
(:mod:`~placementkit.baseline`).

Importable as ``bench.placementkit`` from the repository root (tests; pytest puts the root on
``sys.path``) and as ``placementkit`` from ``bench/`` scripts (a script's own folder is on
``sys.path``).
"""
