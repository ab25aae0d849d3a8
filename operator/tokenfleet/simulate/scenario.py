"""The scenario file of ``tokenfleet simulate`` (YAML), validated by pydantic.

Unknown keys are refused, every number has bounds, and an error names the field
(``pools.0.stays.0.arrive_hour.mean: Input should be less than or equal to 72``).
Units are in the field names, as in the CRDs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
Weekday = Literal["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
Pos = Annotated[float, Field(gt=0)]
NonNeg = Annotated[float, Field(ge=0)]
Percent = Annotated[float, Field(ge=0, le=100)]
Hour = Annotated[float, Field(ge=0, le=24)]


def _all_weekdays() -> list[Weekday]:
    return ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Dist(Strict):
    """A normal distribution, clipped to ``[min, max]`` when given."""

    mean: float
    std: NonNeg = 0.0
    min: float | None = None
    max: float | None = None


class HourDist(Dist):
    mean: Annotated[float, Field(ge=0, le=72)]


class Stay(Strict):
    arrive_hour: HourDist
    depart_hour: HourDist
    """Hours since the arrival day's midnight; a mean not after the arrival's is on the next
    day, one above 24 on a later day (a weekend: Saturday 18:00 to Monday 07:00 is 55)."""
    trip_kwh: Dist
    """Energy the trip before this arrival takes out of the battery, kWh."""
    weekdays: list[Weekday] = Field(default_factory=_all_weekdays, min_length=1)


class Compute(Strict):
    memory_mib: Annotated[int, Field(gt=0)]
    """Memory of the onboard computer free for model replicas, MiB."""
    rise_c_per_w: NonNeg = 0.08
    tau_s: Pos = 600.0


class Ageing(Strict):
    cell: str = "NMC_Gr_75Ah_A"
    """BLAST-Lite cell model class (``blast.models``)."""
    sample_cars: Annotated[int, Field(ge=1, le=100)] = 4
    """Cars of the pool whose traces are aged (with and without compute)."""
    cost_per_kwh_lost: NonNeg = 0.0
    """Price of one kWh of battery capacity lost, currency."""


class Pool(Strict):
    name: Annotated[str, Field(min_length=1, max_length=63)]
    cars: Annotated[int, Field(ge=0, le=100000)]
    battery_kwh: Pos
    charger_kw: Pos
    charge_efficiency: Annotated[float, Field(gt=0, le=1)] = 0.9
    reserve_soc_percent: Percent = 20.0
    target_soc_percent: Percent = 80.0
    initial_soc_percent: Dist = Dist(mean=60.0, std=10.0, min=10.0, max=95.0)
    drain_lead_seconds: NonNeg = 900.0
    max_battery_temp_c: float = 45.0
    max_compute_temp_c: float = 85.0
    battery_tau_s: Pos = 10800.0
    battery_rise_c_per_kw: NonNeg = 0.8
    compute: Compute
    stays: list[Stay] = Field(min_length=1)
    ageing: Ageing = Ageing()
    wear_cost_per_kwh: NonNeg = 0.0
    """Wear price per kWh of compute energy the placement engine weighs (objective only)."""

    @model_validator(mode="after")
    def _reserve_le_target(self) -> Pool:
        if self.reserve_soc_percent > self.target_soc_percent:
            raise ValueError("reserve_soc_percent must be <= target_soc_percent")
        return self


class Coolant(Strict):
    max_supply_c: float = 40.0
    max_return_c: float = 50.0
    design_flow_lpm: Pos = 300.0
    heat_rejection_kw: Pos = 150.0
    setpoint_c: float = 32.0
    approach_c: NonNeg = 8.0

    @model_validator(mode="after")
    def _supply_lt_return(self) -> Coolant:
        if self.max_supply_c >= self.max_return_c:
            raise ValueError("max_supply_c must be < max_return_c")
        return self


class TankDef(Strict):
    name: Annotated[str, Field(min_length=1, max_length=63)]
    capacity_kw: Pos
    pue: Annotated[float, Field(ge=1, le=3)] = 1.05
    racks: Annotated[int, Field(ge=0, le=1000)]
    rack_memory_mib: Annotated[int, Field(gt=0)]
    rack_baseline_watts: NonNeg = 300.0
    coolant: Coolant = Coolant()


class VariantDef(Strict):
    name: Annotated[str, Field(min_length=1, max_length=63)]
    precision: Literal["FP16", "BF16", "FP8", "INT8", "INT4"]
    memory_mib: Annotated[int, Field(gt=0)]
    tokens_per_second: Pos
    watts: Pos
    """Power per replica, W; for a vehicle include what keeping the car awake costs."""
    targets: list[Literal["Rack", "Vehicle"]] = Field(min_length=1)


class ModelDef(Strict):
    name: Annotated[str, Field(min_length=1, max_length=63)]
    variants: list[VariantDef] = Field(min_length=1)
    max_replicas_per_rack: Annotated[int, Field(ge=1, le=64)] = 8
    """The jobs' ``spread.max_replicas_per_node`` (it bounds cars too, where memory for one
    replica is what a car computer usually has)."""


class Online(Strict):
    name: Annotated[str, Field(min_length=1, max_length=63)]
    model: str
    latency_class: Literal["Interactive", "Standard"]
    """Interactive: racks only, priority 500; Standard: racks or cars, priority 300."""
    tokens_per_second_by_hour: list[NonNeg] = Field(min_length=24, max_length=24)


class Window(Strict):
    start_hour: Hour
    end_hour: Hour
    """An end not after the start is on the next day."""


class Batch(Strict):
    name: Annotated[str, Field(min_length=1, max_length=63)]
    model: str
    tokens_per_window: Pos
    window: Window
    preference: Literal["PreferRack", "PreferVehicle", "LowestCost"] = "LowestCost"


class Demand(Strict):
    online: list[Online] = Field(default_factory=list)
    batch: list[Batch] = Field(default_factory=list)


class TouPeriod(Strict):
    from_hour: Annotated[float, Field(ge=0, lt=24)]
    price_per_kwh: NonNeg


class DrEvent(Strict):
    day: Annotated[int, Field(ge=0)]
    """Day of the simulation, 0 = the first."""
    start_hour: Annotated[float, Field(ge=0, lt=24)]
    hours: Annotated[float, Field(gt=0, le=24)]
    cap_kw: NonNeg


class Electricity(Strict):
    tou: list[TouPeriod] = Field(min_length=1)
    demand_charge_per_kw_month: NonNeg = 0.0
    site_cap_kw: Pos
    dr_events: list[DrEvent] = Field(default_factory=list)

    @field_validator("tou")
    @classmethod
    def _tou_sorted(cls, v: list[TouPeriod]) -> list[TouPeriod]:
        hours = [p.from_hour for p in v]
        if hours[0] != 0 or hours != sorted(set(hours)):
            raise ValueError("periods must start at from_hour 0 and increase")
        return v


class AmbientDef(Strict):
    mean_c: float = 15.0
    amplitude_c: NonNeg = 5.0
    peak_hour: Hour = 15.0


class Planner(Strict):
    full_plan_interval_s: Annotated[float, Field(ge=60, le=86400)] = 3600.0
    """Full plans (``plan``) at this period and at demand/price/cap changes; each car event
    (plug-in, drain lead reached, departure) is an incremental ``replan_node``."""
    step_s: Annotated[float, Field(ge=10, le=3600)] = 300.0
    """Physics and accounting step, s."""
    stale_after_s: Pos = 7200.0
    """The pools' telemetry staleness limit (cars report at their events and at full plans)."""


class Revenue(Strict):
    price_per_mtoken: NonNeg = 0.0


class Scenario(Strict):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    description: str = ""
    start: datetime = datetime(2026, 6, 1, tzinfo=UTC)
    """First simulated instant: a UTC midnight."""
    days: Annotated[int, Field(ge=1, le=60)] = 7
    seed: int = 1
    ambient: AmbientDef = AmbientDef()
    electricity: Electricity
    revenue: Revenue = Revenue()
    planner: Planner = Planner()
    pools: list[Pool] = Field(default_factory=list)
    tanks: list[TankDef] = Field(default_factory=list)
    models: list[ModelDef] = Field(min_length=1)
    demand: Demand

    @field_validator("start")
    @classmethod
    def _midnight(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            v = v.replace(tzinfo=UTC)
        if v.timestamp() % 86400 != 0:
            raise ValueError("start must be a UTC midnight")
        return v

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        models = {m.name for m in self.models}
        refs = [("online", i, d.model) for i, d in enumerate(self.demand.online)]
        refs += [("batch", i, b.model) for i, b in enumerate(self.demand.batch)]
        for kind, i, model in refs:
            if model not in models:
                raise ValueError(f"demand.{kind}.{i}.model: unknown model {model!r}")
        names = [p.name for p in self.pools] + [t.name for t in self.tanks]
        if len(names) != len(set(names)):
            raise ValueError("pools and tanks need unique names")
        jobs = [d.name for d in self.demand.online] + [d.name for d in self.demand.batch]
        if len(jobs) != len(set(jobs)):
            raise ValueError("demand names must be unique")
        for i, ev in enumerate(self.electricity.dr_events):
            if ev.day >= self.days:
                raise ValueError(f"electricity.dr_events.{i}.day: past the last day")
        return self


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the field(s)."""


def parse_scenario(data: object, source: str = "scenario") -> Scenario:
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
            lines.append(f"{loc}: {err['msg']}")
        raise ScenarioError(f"{source}: invalid scenario\n  " + "\n  ".join(lines)) from None


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{p}: not YAML: {exc}") from None
    return parse_scenario(data, str(p))
