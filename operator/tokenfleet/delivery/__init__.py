"""Model delivery: weights reach racks and cars from an object store, verified.

* :mod:`.digest` — the variant digest (``spec.variants[].sha256``) of a model directory;
* :mod:`.lru` — least-recently-used eviction under a per-node disk budget;
* :mod:`.rules` — may a car download now (plugged in, bandwidth, finishes before departure);
* :mod:`.report` — the ``tokenfleet.io/model-cache`` Node annotation the cache publishes;
* :mod:`.gate` — what the operator does with a replica given that report;
* :mod:`.cache` / :mod:`.runner` — the node-side cache (``tokenfleet modelcache``).

Everything but :mod:`.cache` and :mod:`.runner` is pure (no I/O, clock passed in).
"""
