"""Battery capacity fade with NREL BLAST-Lite (``pip install --no-deps blast-lite``).

:func:`cell_model` makes a BLAST-Lite cell model by class name (``blast.models``);
:func:`relative_capacity` runs it over a (time, SoC, temperature) trace, optionally repeated to
a number of years, and returns the remaining relative capacity ``q`` (1.0 = new).

BLAST-Lite 1.1.1 declares ``numpy<2`` and calls ``numpy.trapz``, which numpy 2 renamed
``trapezoid``; :func:`_blast` supplies the alias when it is missing (the functions are the same).
Its other declared dependency, ``nrel-rex`` (climate data download), is not needed by the cell
models, hence the ``--no-deps`` install (see the Makefile).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArr = npt.NDArray[np.float64]


def _blast() -> ModuleType:
    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid  # type: ignore[attr-defined]
    try:
        from blast import models  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - install problem
        raise RuntimeError(
            "battery ageing needs NREL BLAST-Lite: pip install --no-deps 'blast-lite==1.1.1' "
            "h5pyd geopy pandas matplotlib"
        ) from exc
    assert isinstance(models, ModuleType)
    return models


def available_cells() -> list[str]:
    """Class names of BLAST-Lite's cell models."""
    return list(_blast().available_models())


def cell_model(name: str) -> Any:
    """A fresh BLAST-Lite cell model (``blast.models.<name>()``)."""
    models = _blast()
    if name not in models.available_models():
        raise ValueError(f"unknown BLAST-Lite cell model {name!r}")
    return getattr(models, name)()


def relative_capacity(
    cell: str, t_s: FloatArr, soc_percent: FloatArr, temp_c: FloatArr, years: float | None = None
) -> float:
    """Remaining relative capacity after the trace (``years`` = None) or after the trace
    repeated for ``years`` years.  ``t_s`` starts at 0 and increases."""
    if len(t_s) < 2:
        return 1.0
    model = cell_model(cell)
    data = {
        "Time_s": np.asarray(t_s, dtype=np.float64),
        "SOC": np.clip(np.asarray(soc_percent, dtype=np.float64) / 100.0, 0.0, 1.0),
        "Temperature_C": np.asarray(temp_c, dtype=np.float64),
    }
    if years is None:
        model.update_battery_state(data["Time_s"], data["SOC"], data["Temperature_C"])
    else:
        model.simulate_battery_life(data, threshold_time=years)
    return float(model.outputs["q"][-1])
