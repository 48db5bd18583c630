"""Card layout plans: which module owns which card application or M1 sector, per tenant.

A plan is a frozen dataclass the caller persists (``to_dict``/``from_dict`` give plain JSON
data). The key service consults it on every request: a module gets keys only of applications
it owns, or key names an owner explicitly granted it (e.g. canteen may use the purse's DPK and
DTK, never its DLK). Keys are stored under the application's ``app_id``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from onecard.keys.algorithms import Algorithm
from onecard.keys.errors import LayoutError
from onecard.keys.hsm import MAX_LEVELS
from onecard.keys.profiles import Profile

M1_SECTORS: Final = range(1, 40)  # sector 0 holds the manufacturer block and the MAD


class AppKind(StrEnum):
    """Where on the card an application lives."""

    CPU_ADF = "cpu_adf"  # an ADF selected by AID (purse, transit application …)
    CPU_RECORD = "cpu_record"  # a compound-application record id in SFI 0x1A (§4.5)
    M1 = "m1"  # MIFARE Classic sectors


@dataclass(frozen=True, slots=True)
class Grant:
    """Permission for a non-owner ``module`` to use the named keys of an application."""

    module: str
    key_names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CardApplication:
    """One application on the card and the module that owns its keys."""

    app_id: str
    owner: str
    kind: AppKind
    algorithm: Algorithm
    levels: int
    profile: Profile = Profile.CAMPUS
    aid: str | None = None
    record_id: int | None = None
    m1_app_code: int | None = None
    sectors: tuple[int, ...] = ()
    grants: tuple[Grant, ...] = ()

    def __post_init__(self) -> None:
        if not self.app_id or not self.owner:
            raise LayoutError("application id and owner must be non-empty")
        if not 0 <= self.levels <= MAX_LEVELS:
            raise LayoutError(f"{self.app_id}: levels must be 0..{MAX_LEVELS}")
        _check_kind(self)

    def allows(self, module: str, key_name: str) -> bool:
        """Whether ``module`` may use key ``key_name`` of this application."""
        if module == self.owner:
            return True
        return any(g.module == module and key_name in g.key_names for g in self.grants)


def _check_kind(app: CardApplication) -> None:
    if app.kind is AppKind.CPU_ADF and not app.aid:
        raise LayoutError(f"{app.app_id}: a CPU ADF application needs an AID")
    if app.kind is AppKind.CPU_RECORD and app.record_id is None:
        raise LayoutError(f"{app.app_id}: a CPU record application needs a record id")
    if app.kind is AppKind.M1:
        if app.m1_app_code is None or not app.sectors:
            raise LayoutError(f"{app.app_id}: an M1 application needs an app code and sectors")
        bad = [s for s in app.sectors if s not in M1_SECTORS]
        if bad:
            raise LayoutError(f"{app.app_id}: M1 sectors {bad} outside 1..39")
    elif app.sectors:
        raise LayoutError(f"{app.app_id}: only M1 applications own sectors")


@dataclass(frozen=True, slots=True)
class CardLayoutPlan:
    """A tenant's card layout; construction validates that no two applications collide."""

    tenant_id: int
    applications: tuple[CardApplication, ...] = ()
    _by_id: dict[str, CardApplication] = field(init=False, repr=False, compare=False)
    _by_sector: dict[int, CardApplication] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", _unique(self.applications, lambda a: [a.app_id]))
        object.__setattr__(self, "_by_sector", _unique(self.applications, lambda a: a.sectors))
        _unique(self.applications, lambda a: [a.aid.upper()] if a.aid else [])
        _unique(self.applications, lambda a: [] if a.record_id is None else [a.record_id])

    def application(self, app_id: str) -> CardApplication | None:
        """The application with this id, or None."""
        return self._by_id.get(app_id)

    def application_for_sector(self, sector: int) -> CardApplication | None:
        """The M1 application owning ``sector``, or None."""
        return self._by_sector.get(sector)

    def application_for_aid(self, aid: str) -> CardApplication | None:
        """The CPU application selected by ``aid`` (hex, any case), or None."""
        wanted = aid.upper()
        return next((a for a in self.applications if (a.aid or "").upper() == wanted), None)

    def owned_by(self, module: str) -> tuple[CardApplication, ...]:
        """Applications whose owner is ``module``."""
        return tuple(a for a in self.applications if a.owner == module)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data for the caller to persist."""
        return {
            "tenant_id": self.tenant_id,
            "applications": [_app_to_dict(a) for a in self.applications],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CardLayoutPlan:
        """Inverse of `to_dict` (validates again)."""
        apps = tuple(_app_from_dict(d) for d in data["applications"])
        return cls(int(data["tenant_id"]), apps)


def _unique(apps: Iterable[CardApplication], keys_of: Any) -> dict[Any, CardApplication]:
    seen: dict[Any, CardApplication] = {}
    for app in apps:
        for k in keys_of(app):
            if k in seen:
                raise LayoutError(f"{k!r} claimed by both {seen[k].app_id} and {app.app_id}")
            seen[k] = app
    return seen


def _app_to_dict(a: CardApplication) -> dict[str, Any]:
    return {
        "app_id": a.app_id,
        "owner": a.owner,
        "kind": a.kind.value,
        "algorithm": a.algorithm.value,
        "levels": a.levels,
        "profile": a.profile.value,
        "aid": a.aid,
        "record_id": a.record_id,
        "m1_app_code": a.m1_app_code,
        "sectors": list(a.sectors),
        "grants": [{"module": g.module, "key_names": list(g.key_names)} for g in a.grants],
    }


def _app_from_dict(d: dict[str, Any]) -> CardApplication:
    grants = tuple(Grant(g["module"], tuple(g["key_names"])) for g in d.get("grants", ()))
    return CardApplication(
        app_id=d["app_id"],
        owner=d["owner"],
        kind=AppKind(d["kind"]),
        algorithm=Algorithm(d["algorithm"]),
        levels=int(d["levels"]),
        profile=Profile(d.get("profile", Profile.CAMPUS.value)),
        aid=d.get("aid"),
        record_id=d.get("record_id"),
        m1_app_code=d.get("m1_app_code"),
        sectors=tuple(d.get("sectors", ())),
        grants=grants,
    )
