"""An immersion tank's coolant loop following its IT load (first-order, virtual time)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TankLoopSpec:
    """Coolant loop of one tank.  Heat ≈ IT power; the return rises over the supply by
    ``heat / (flow * density * c_p)``; the supply is held at the chiller setpoint, or at
    ``ambient + approach`` when the dry cooler cannot reach the setpoint."""

    design_flow_lpm: float
    setpoint_c: float = 32.0
    approach_c: float = 8.0
    density_kg_per_l: float = 0.8
    specific_heat_kj_per_kg_k: float = 2.1
    tau_s: float = 600.0
    """Time constant of the bath, s."""


@dataclass
class TankLoop:
    """Mutable coolant temperatures of one tank."""

    spec: TankLoopSpec
    supply_c: float
    return_c: float

    @classmethod
    def at_rest(cls, spec: TankLoopSpec, ambient_c: float, it_kw: float) -> TankLoop:
        s, r = spec_steady(spec, ambient_c, it_kw)
        return cls(spec, s, r)

    def advance(self, dt_s: float, ambient_c: float, it_kw: float) -> None:
        """Relax toward the steady state of ``it_kw`` at ``ambient_c`` over ``dt_s`` seconds."""
        s, r = spec_steady(self.spec, ambient_c, it_kw)
        k = math.exp(-dt_s / self.spec.tau_s) if self.spec.tau_s > 0 else 0.0
        self.supply_c = s + (self.supply_c - s) * k
        self.return_c = r + (self.return_c - r) * k


def spec_steady(spec: TankLoopSpec, ambient_c: float, it_kw: float) -> tuple[float, float]:
    """Steady supply and return temperatures, °C, for ``it_kw`` of heat at ``ambient_c``."""
    supply = max(spec.setpoint_c, ambient_c + spec.approach_c)
    kg_per_s = spec.design_flow_lpm / 60.0 * spec.density_kg_per_l
    rise = it_kw / (kg_per_s * spec.specific_heat_kj_per_kg_k) if kg_per_s > 0 else math.inf
    return supply, supply + rise
