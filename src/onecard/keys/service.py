"""`KeyService`: the facade modules call for card cryptography and key ceremonies.

It holds no keys. Each call names the calling module; the tenant's card layout plan decides
whether that module owns (or was granted) the application or M1 sector, and a refusal raises
`ApplicationNotOwned` after auditing ``keys.access_denied``. Every operation, allowed or not,
calls ``audit(event_type, tenant_id, data)``; audit data carries identifiers, counts, outcomes
and public check values, never key bytes or MACs.

Key versions: card operations take the key version byte the card reported, so cards issued
under an older version keep working after a rotation for as long as that version stays active.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from typing import Any, Final, NoReturn

from onecard.keys.errors import ApplicationNotOwned, KeyNotFound, MacInvalid
from onecard.keys.hsm import (
    Hsm,
    KeyComponent,
    KeyInfo,
    KeyRef,
    KeyUsage,
    LoadRequest,
    PurchaseRequest,
    TacCheck,
    WrappedKeySet,
    usage_of,
)
from onecard.keys.layout import CardApplication, CardLayoutPlan
from onecard.keys.terminals import MacCheck

AuditFn = Callable[[str, int, dict[str, Any]], None]
PlanLookup = Callable[[int], CardLayoutPlan | None]

TRANSPORT_KEY: Final = "TK"
M1_KEY: Final = "M1"


class KeyService:
    """Operations on card keys for modules, with application isolation and audit."""

    def __init__(self, hsm: Hsm, plans: PlanLookup, audit: AuditFn) -> None:
        self._hsm = hsm
        self._plans = plans
        self._audit = audit

    def __repr__(self) -> str:
        return f"KeyService({type(self._hsm).__name__})"

    # ------------------------------------------------------------------ isolation
    def _authorize(
        self, module: str, tenant_id: int, application: str, key_name: str, operation: str
    ) -> CardApplication:
        plan = self._plans(tenant_id)
        app = plan.application(application) if plan else None
        if app is None or not app.allows(module, key_name):
            self._deny(module, tenant_id, operation, application=application, key=key_name)
        return app

    def _deny(self, module: str, tenant_id: int, operation: str, **what: Any) -> NoReturn:
        data = {"module": module, "operation": operation, **what}
        self._audit("keys.access_denied", tenant_id, data)
        where = ", ".join(f"{k}={v}" for k, v in what.items())
        raise ApplicationNotOwned(f"module {module!r} may not {operation} ({where})")

    def _emit(self, event: str, ref: KeyRef, module: str, **extra: Any) -> None:
        data = {
            "module": module,
            "application": ref.application,
            "key": ref.name,
            "version": ref.version,
            **extra,
        }
        self._audit(event, ref.tenant_id, data)

    # ------------------------------------------------------------------ card operations
    def load_mac2(
        self,
        *,
        module: str,
        tenant_id: int,
        application: str,
        key_version: int,
        request: LoadRequest,
        key_name: str = "DLK",
    ) -> bytes:
        """Verify a card's load MAC1 and return MAC2; `MacInvalid` (audited) if MAC1 is wrong."""
        self._authorize(module, tenant_id, application, key_name, "load_mac2")
        ref = KeyRef(tenant_id, application, key_name, key_version)
        try:
            mac2 = self._hsm.load_mac2(ref, request)
        except MacInvalid:
            self._emit("keys.load_mac2", ref, module, outcome="mac1_invalid", amount=request.amount)
            raise
        self._emit("keys.load_mac2", ref, module, outcome="ok", amount=request.amount)
        return mac2

    def purchase_mac1(
        self,
        *,
        module: str,
        tenant_id: int,
        application: str,
        key_version: int,
        request: PurchaseRequest,
        key_name: str = "DPK",
    ) -> bytes:
        """PSAM-equivalent purchase MAC1 for cloud/QR terminals."""
        self._authorize(module, tenant_id, application, key_name, "purchase_mac1")
        ref = KeyRef(tenant_id, application, key_name, key_version)
        mac1 = self._hsm.purchase_mac1(ref, request)
        self._emit("keys.purchase_mac1", ref, module, amount=request.amount)
        return mac1

    def verify_purchase_mac2(
        self,
        *,
        module: str,
        tenant_id: int,
        application: str,
        key_version: int,
        request: PurchaseRequest,
        mac2: bytes,
        key_name: str = "DPK",
    ) -> bool:
        """Whether the card's purchase MAC2 verifies."""
        self._authorize(module, tenant_id, application, key_name, "verify_purchase_mac2")
        ref = KeyRef(tenant_id, application, key_name, key_version)
        ok = self._hsm.verify_purchase_mac2(ref, request, mac2)
        self._emit("keys.purchase_mac2_verified", ref, module, ok=ok)
        return ok

    def verify_tacs(
        self,
        *,
        module: str,
        tenant_id: int,
        application: str,
        key_version: int,
        checks: Sequence[TacCheck],
        key_name: str = "DTK",
    ) -> list[bool]:
        """TAC verdicts for a batch of records of one key version (one audit event per batch)."""
        self._authorize(module, tenant_id, application, key_name, "verify_tacs")
        ref = KeyRef(tenant_id, application, key_name, key_version)
        verdicts = self._hsm.verify_tacs(ref, checks)
        failed = verdicts.count(False)
        self._emit("keys.tacs_verified", ref, module, count=len(verdicts), failed=failed)
        return verdicts

    def verify_tac(
        self, *, module: str, tenant_id: int, application: str, key_version: int, check: TacCheck
    ) -> bool:
        """TAC verdict for one record."""
        return self.verify_tacs(
            module=module,
            tenant_id=tenant_id,
            application=application,
            key_version=key_version,
            checks=[check],
        )[0]

    def secure_messaging_mac(
        self,
        *,
        module: str,
        tenant_id: int,
        application: str,
        key_version: int,
        factors: Sequence[bytes],
        data: bytes,
        iv: bytes | None = None,
        key_name: str = "DAMK",
    ) -> bytes:
        """MAC for a secure-messaging command (04 D6 / 04 DC / 84 xx) with a card-level key."""
        self._authorize(module, tenant_id, application, key_name, "secure_messaging_mac")
        ref = KeyRef(tenant_id, application, key_name, key_version)
        mac = self._hsm.derive_and_mac(ref, factors, data, iv)
        self._emit("keys.sm_mac", ref, module, length=len(data))
        return mac

    def verify_macs(
        self,
        *,
        module: str,
        tenant_id: int,
        application: str,
        key_name: str,
        key_version: int,
        checks: Sequence[MacCheck],
    ) -> list[bool]:
        """Verdicts for secure-messaging MACs (e.g. terminal record MACs) under the key
        diversified by each check's factors; compared here, so no MAC leaves (one audit event
        per batch)."""
        self._authorize(module, tenant_id, application, key_name, "verify_macs")
        ref = KeyRef(tenant_id, application, key_name, key_version)
        verdicts = [
            hmac.compare_digest(self._hsm.derive_and_mac(ref, c.factors, c.data), c.mac)
            for c in checks
        ]
        self._emit(
            "keys.macs_verified", ref, module, count=len(checks), failed=verdicts.count(False)
        )
        return verdicts

    def m1_sector_key(
        self,
        *,
        module: str,
        tenant_id: int,
        sector: int,
        uid: bytes,
        key_type: int,
        key_version: int,
    ) -> bytes:
        """The 6-byte M1 key of ``sector`` for card ``uid``, if ``module`` owns that sector."""
        plan = self._plans(tenant_id)
        app = plan.application_for_sector(sector) if plan else None
        if app is None or not app.allows(module, M1_KEY):
            self._deny(module, tenant_id, "m1_sector_key", sector=sector)
        assert app.m1_app_code is not None  # the layout guarantees it for sector owners
        ref = KeyRef(tenant_id, app.app_id, M1_KEY, key_version)
        key = self._hsm.m1_sector_key(ref, uid, app.m1_app_code, sector, key_type)
        self._emit("keys.m1_sector_key", ref, module, sector=sector, key_type=key_type)
        return key

    def _wrapped(
        self,
        operation: str,
        module: str,
        tenant_id: int,
        application: str,
        key_names: Sequence[str],
        key_version: int,
        transport_version: int,
    ) -> tuple[list[KeyRef], KeyRef]:
        for name in (*key_names, TRANSPORT_KEY):
            self._authorize(module, tenant_id, application, name, operation)
        refs = [KeyRef(tenant_id, application, n, key_version) for n in key_names]
        return refs, KeyRef(tenant_id, application, TRANSPORT_KEY, transport_version)

    def card_personalisation(
        self,
        *,
        module: str,
        tenant_id: int,
        application: str,
        key_names: Sequence[str],
        key_version: int,
        factors: Sequence[bytes],
        transport_version: int = 1,
    ) -> WrappedKeySet:
        """Card-level keys for one card, wrapped under the application's transport key."""
        args = (module, tenant_id, application, key_names, key_version, transport_version)
        refs, tk = self._wrapped("card_personalisation", *args)
        wrapped = self._hsm.wrap_card_keys(refs, factors, tk)
        self._emit("keys.card_keys_wrapped", refs[0], module, keys=list(key_names))
        return wrapped

    def psam_image(
        self,
        *,
        module: str,
        tenant_id: int,
        application: str,
        key_names: Sequence[str],
        key_version: int,
        factors: Sequence[bytes] = (),
        transport_version: int = 1,
    ) -> WrappedKeySet:
        """PSAM keys (master, or diversified by leading ``factors``) wrapped for a PSAM."""
        args = (module, tenant_id, application, key_names, key_version, transport_version)
        refs, tk = self._wrapped("psam_image", *args)
        wrapped = self._hsm.wrap_psam_image(refs, factors, tk)
        self._emit("keys.psam_image_wrapped", refs[0], module, keys=list(key_names))
        return wrapped

    # ------------------------------------------------------------------ ceremonies
    @staticmethod
    def _levels(app: CardApplication, key_name: str) -> int:
        # Transport and M1 masters are used as they are; card keys follow the application.
        if usage_of(key_name) in (KeyUsage.TRANSPORT, KeyUsage.M1):
            return 0
        return app.levels

    def versions(self, *, tenant_id: int, application: str, key_name: str) -> list[KeyInfo]:
        """All stored versions of one key, oldest first."""
        return [
            k
            for k in self._hsm.list_keys(tenant_id)
            if k.ref.application == application and k.ref.name == key_name
        ]

    def current_version(self, *, tenant_id: int, application: str, key_name: str) -> int:
        """Highest active version: the one new cards are issued with."""
        active = [
            k.ref.version
            for k in self.versions(tenant_id=tenant_id, application=application, key_name=key_name)
            if k.active
        ]
        if not active:
            raise KeyNotFound(f"no active version of {tenant_id}/{application}/{key_name}")
        return max(active)

    def generate_master(
        self,
        *,
        module: str,
        tenant_id: int,
        application: str,
        key_name: str,
        version: int = 1,
        exportable: bool = True,
    ) -> KeyInfo:
        """Generate a master key inside the HSM with the application's algorithm and levels."""
        app = self._authorize(module, tenant_id, application, key_name, "generate_master")
        ref = KeyRef(tenant_id, application, key_name, version)
        info = self._hsm.generate_key(
            ref, app.algorithm, self._levels(app, key_name), exportable=exportable
        )
        self._emit("keys.generated", ref, module, kcv=info.kcv.hex().upper())
        return info

    def import_master(
        self,
        *,
        module: str,
        tenant_id: int,
        application: str,
        key_name: str,
        version: int,
        components: Sequence[KeyComponent],
        expected_kcv: bytes | None = None,
    ) -> KeyInfo:
        """Assemble a master from 2–3 components with KCVs (key ceremony)."""
        app = self._authorize(module, tenant_id, application, key_name, "import_master")
        ref = KeyRef(tenant_id, application, key_name, version)
        info = self._hsm.import_components(
            ref, app.algorithm, self._levels(app, key_name), components, expected_kcv=expected_kcv
        )
        extra = {"components": len(components), "kcv": info.kcv.hex().upper()}
        self._emit("keys.imported", ref, module, **extra)
        return info

    def export_components(
        self,
        *,
        module: str,
        tenant_id: int,
        application: str,
        key_name: str,
        version: int,
        count: int = 2,
    ) -> list[KeyComponent]:
        """Split a master into 2–3 components for custodians (key ceremony)."""
        self._authorize(module, tenant_id, application, key_name, "export_components")
        ref = KeyRef(tenant_id, application, key_name, version)
        components = self._hsm.export_components(ref, count)
        kcvs = [c.kcv.hex().upper() for c in components]
        self._emit("keys.components_exported", ref, module, count=count, component_kcvs=kcvs)
        return components

    def rotate(self, *, module: str, tenant_id: int, application: str, key_name: str) -> KeyInfo:
        """Generate the next version; older versions stay active for cards already issued."""
        self._authorize(module, tenant_id, application, key_name, "rotate")
        existing = self.versions(tenant_id=tenant_id, application=application, key_name=key_name)
        version = max((k.ref.version for k in existing), default=0) + 1
        info = self.generate_master(
            module=module,
            tenant_id=tenant_id,
            application=application,
            key_name=key_name,
            version=version,
        )
        self._emit("keys.rotated", info.ref, module, previous=version - 1)
        return info

    def retire(
        self, *, module: str, tenant_id: int, application: str, key_name: str, version: int
    ) -> KeyInfo:
        """Retire one version: cards still carrying it stop working (after re-issue)."""
        self._authorize(module, tenant_id, application, key_name, "retire")
        ref = KeyRef(tenant_id, application, key_name, version)
        info = self._hsm.set_active(ref, False)
        self._emit("keys.retired", ref, module)
        return info
