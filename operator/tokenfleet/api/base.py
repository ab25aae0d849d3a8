"""Building blocks shared by the API models: wire names, CEL rules that pydantic also enforces.

Every cross-field invariant is declared once, as a :class:`CelRule` on the model that holds both
fields. The same object becomes an ``x-kubernetes-validations`` entry in the generated CRD and a
pydantic ``model_validator`` check, so a bad spec is refused with the same message by the API
server and by ``Model.model_validate``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self, TypeVar

from pydantic import BaseModel, ConfigDict, GetJsonSchemaHandler, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

# Unit words that are not simply capitalised on the wire (capacity_kw -> capacityKW).
_WIRE_WORDS = {"kw": "KW", "kwh": "KWh", "mib": "MiB", "kj": "KJ"}


def wire_name(attribute: str) -> str:
    """The camelCase wire name of a snake_case attribute, keeping units readable.

    >>> wire_name("capacity_kw"), wire_name("specific_heat_kj_per_kg_k"), wire_name("memory_mib")
    ('capacityKW', 'specificHeatKJPerKgK', 'memoryMiB')
    """
    head, *rest = attribute.split("_")
    return head + "".join(_WIRE_WORDS.get(word, word.capitalize()) for word in rest)


@dataclass(frozen=True)
class CelRule:
    """A cross-field rule: CEL for the API server, ``check`` for pydantic. One message for both.

    ``rule`` sees ``self`` as the object the rule is attached to (wire names); ``field_path`` is
    relative to it (``.min``), as in ``x-kubernetes-validations[].fieldPath``. ``reason`` is
    FieldValueInvalid or FieldValueRequired: with FieldValueDuplicate the API server prints
    "Duplicate value" and drops the message.
    """

    rule: str
    message: str
    check: Callable[[Any], bool] = field(compare=False, repr=False)
    field_path: str | None = None
    reason: str = "FieldValueInvalid"

    def to_schema(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        out["reason"] = self.reason
        return out


class WireModel(BaseModel):
    """Base of every API model: camelCase wire names, unknown fields refused, CEL rules checked."""

    model_config = ConfigDict(
        alias_generator=wire_name,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        use_attribute_docstrings=True,
        use_enum_values=False,
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    @model_validator(mode="after")
    def _check_cel_rules(self) -> Self:
        failed = [rule.message for rule in type(self).cel_rules if not rule.check(self)]
        if failed:
            raise ValueError("; ".join(failed))
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        if cls.cel_rules:
            target = handler.resolve_ref_schema(schema)
            target["x-kubernetes-validations"] = [rule.to_schema() for rule in cls.cel_rules]
        return schema

    def to_wire(self, *, exclude_none: bool = True) -> dict[str, Any]:
        """The JSON-ready dict with camelCase keys (what goes into a patch or a manifest).

        With ``exclude_none`` (the default) unset fields are left out, so a merge patch leaves
        them alone; to clear a status field, put ``None`` in the patch explicitly.
        """
        return self.model_dump(mode="json", by_alias=True, exclude_none=exclude_none)


class StatusModel(WireModel):
    """Base of status models: fields optional, unknown keys ignored (status is read back raw)."""

    model_config = ConfigDict(extra="ignore")


H = TypeVar("H", bound=Hashable)


def unique_items(items: Sequence[H]) -> Sequence[H]:
    """Pydantic after-validator for ``x-kubernetes-list-type: set`` lists."""
    seen: set[H] = set()
    for item in items:
        if item in seen:
            raise ValueError(f"duplicate entry {item!r}")
        seen.add(item)
    return items
