"""Cross-field rules, written once and enforced twice.

Each rule carries the CEL expression the API server evaluates (it lands in the CRD as
``x-kubernetes-validations``) and the Python predicate ``optiserve validate`` runs, side by side,
so a reviewer sees both halves of the same rule in one place.
``tests/unit/test_schema_agreement.py`` evaluates the CEL with a real CEL interpreter
(cel-python) on generated specs and compares it with the Python half, and
``tests/cluster/test_validate_agrees_with_apiserver.py`` does so on the real API server, so
the halves cannot drift apart silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationInfo, model_validator

# Validation context key: rules not to check (a collection of CelRule.key).
SKIP_RULES = "optiserve.skip_rules"


@dataclass(frozen=True)
class CelRule:
    """One cross-field rule of an object in the API."""

    cel: str
    """The expression over ``self`` the API server checks (must be true for a valid object)."""
    message: str
    """What the user reads when the rule fails; names the fix, not only the problem."""
    field: str
    """The field the message is about, relative to the object (``.calibration``)."""
    check: Callable[[Any], bool]
    """The same rule in Python, given the parsed model."""

    @property
    def key(self) -> tuple[str, str]:
        """(field, message): what a user reads of the rule, and what names it in a context."""
        return self.field.lstrip("."), self.message

    def as_validation(self) -> dict[str, str]:
        return {"rule": self.cel, "message": self.message, "fieldPath": self.field}


class RuledModel(BaseModel):
    """A model whose class attribute ``rules`` lists its cross-field rules."""

    rules: ClassVar[tuple[CelRule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self, info: ValidationInfo) -> RuledModel:
        # optiserve.validate re-checks a document whose reported problems are taken as fixed:
        # the rules it already reported are skipped then (see validate.py).
        skip = (info.context or {}).get(SKIP_RULES, ())
        failed = [r for r in type(self).rules if r.key not in skip and not r.check(self)]
        if failed:
            # pydantic wraps ValueError into one error located at this model; every failed
            # rule is one "[field] message" line of it, which validate.py splits again, so
            # the user reads all of them at once (the API server also checks every rule).
            raise ValueError(
                "\n".join(f"[{rule.field.lstrip('.')}] {rule.message}" for rule in failed)
            )
        return self
