"""Test-wide settings.

Hypothesis: CI machines are 2 shared cores, so wall-clock health checks and per-example deadlines
would fail on load rather than on a bug. The ``ci`` profile (the default) turns those off and
derandomizes, so a run is reproducible; ``HYPOTHESIS_PROFILE=dev`` explores with fresh seeds.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "dev", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
