"""BLAST-Lite wear: deeper cycling and hotter batteries lose more capacity."""

from __future__ import annotations

import numpy as np
import pytest

from tokenfleet.fleetsim.ageing import available_cells, relative_capacity

T = np.arange(0, 7 * 86400 + 1, 900.0)
HOURS = (T / 3600) % 24


def trace(depth: float, temp: float) -> tuple[np.ndarray, np.ndarray]:
    """A daily cycle of ``2 * depth`` points around 55 % SoC at a constant temperature."""
    soc = np.where((HOURS > 7) & (HOURS < 18), 55.0 - depth, 55.0 + depth)
    return soc, np.full_like(T, temp)


@pytest.mark.parametrize("cell", ["NMC_Gr_75Ah_A", "Lfp_Gr_250AhPrismatic"])
def test_wear_is_monotone_in_depth_and_temperature(cell: str) -> None:
    def q(depth: float, temp: float) -> float:
        soc, tc = trace(depth, temp)
        return relative_capacity(cell, T, soc, tc, years=1.0)

    by_depth = [q(d, 30.0) for d in (5.0, 20.0, 35.0)]
    by_temp = [q(20.0, t) for t in (15.0, 30.0, 40.0)]
    assert by_depth[0] > by_depth[1] > by_depth[2]
    assert by_temp[0] > by_temp[1] > by_temp[2]
    assert all(0.5 < v < 1.0 for v in by_depth + by_temp)


def test_one_trace_without_repetition_and_unknown_cells() -> None:
    soc, tc = trace(20.0, 25.0)
    week = relative_capacity("NMC_Gr_75Ah_A", T, soc, tc)
    year = relative_capacity("NMC_Gr_75Ah_A", T, soc, tc, years=1.0)
    assert 1.0 > week > year
    assert "NMC_Gr_75Ah_A" in available_cells()
    with pytest.raises(ValueError, match="unknown BLAST-Lite cell"):
        relative_capacity("NoSuchCell", T, soc, tc)
