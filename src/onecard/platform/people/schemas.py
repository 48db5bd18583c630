"""Validated input for people: one definition used by the API, the importer and the CLI."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from onecard.platform.people.models import IDENTITY_CLASSES

PersonNo = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._-]+$"
    ),
]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Phone = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=32, pattern=r"^[0-9+() -]*$")
]
Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, max_length=200, pattern=r"^$|^[^@\s]+@[^@\s]+\.[^@\s]+$"
    ),
]
IdentityClass = Annotated[str, Field(json_schema_extra={"enum": list(IDENTITY_CLASSES)})]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class PersonCreate(_Strict):
    """A new person. ``org_unit_id`` or ``org_unit_code`` places them in the org tree."""

    person_no: PersonNo
    name: Name
    identity_class: IdentityClass
    org_unit_id: int | None = None
    org_unit_code: str | None = Field(default=None, max_length=40)
    phone: Phone | None = None
    email: Email | None = None
    valid_from: date | None = None
    valid_until: date | None = None

    @field_validator("identity_class")
    @classmethod
    def _known_class(cls, value: str) -> str:
        check_identity_class(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        check_validity(self.valid_from, self.valid_until)
        return self


class PersonUpdate(_Strict):
    """A partial change of a person; only the fields given are changed."""

    name: Name | None = None
    identity_class: IdentityClass | None = None
    org_unit_id: int | None = None
    phone: Phone | None = None
    email: Email | None = None
    valid_from: date | None = None
    valid_until: date | None = None

    @field_validator("name", "identity_class", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("may be left out, but not set to null")
        return value

    @field_validator("identity_class")
    @classmethod
    def _known_class(cls, value: str | None) -> str | None:
        if value is not None:
            check_identity_class(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        check_validity(self.valid_from, self.valid_until)
        return self


def check_identity_class(value: str) -> None:
    """Raise ``ValueError`` (a pydantic validation error) for an unknown identity class."""
    if value not in IDENTITY_CLASSES:
        raise ValueError(f"identity_class must be one of {', '.join(IDENTITY_CLASSES)}")


def check_validity(start: date | None, end: date | None) -> None:
    """Raise ``ValueError`` when the validity ends before it starts."""
    if start and end and end < start:
        raise ValueError("valid_until is before valid_from")
