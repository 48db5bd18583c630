"""The card centre's CPU-card key side over the REST API, end to end: issue → personalisation
package → emulated card personalised by a device holding the transport key → online load →
offline purchases through a PSAM loaded from the key service → clearing batch → ledger.
Plus: neither the key store file nor the database holds any clear key the test created."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text

from onecard.device_agents.terminal.channel import InProcessChannel
from onecard.device_agents.terminal.load import LoadAuthorisation, load
from onecard.keys import algorithms as alg
from onecard.keys.algorithms import Algorithm
from onecard.keys.softhsm import SoftHsm, split_key
from onecard.platform.actors import Actor
from onecard.platform.cards.keyring import (
    CARD_CENTRE,
    PURSE,
    PURSE_KEYS,
    TRANSPORT,
    Keyring,
    default_plan,
    save_plan,
)
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.ledger.accounts import (
    AccountTemplate,
    balance_of,
    open_account,
    tenant_account,
)
from onecard.platform.ledger.models import AccountType, Entry
from onecard.platform.ledger.reconcile import verify
from onecard.testing.cardkit import (
    KEK,
    PIN,
    TERMINAL,
    buy,
    card_from_package,
    ceremony_service,
    psam_for,
    tampered,
    transport_key,
    unwrapper,
)
from onecard.web.api.cardkeys import KEYRING

MERCHANT = AccountTemplate(
    "merchant", AccountType.LIABILITY, "Liabilities:Merchants:Canteen-A", "Canteen A", None
)


@pytest.fixture
def keyring(app, tmp_path, monkeypatch) -> Keyring:
    ring = Keyring(SoftHsm(tmp_path / "keys.store", KEK, create=True))
    monkeypatch.setitem(app.extensions, KEYRING, ring)
    return ring


class Centre:
    """The test's view of one tenant: API calls plus direct sessions for ceremonies."""

    def __init__(self, api, keyring, session_factory, now, algorithm):
        self.api, self.keyring, self.sf, self.now = api, keyring, session_factory, now
        self.tid = api.tenant.id
        with self.session() as s:
            save_plan(s, default_plan(self.tid, algorithm), actor=Actor.system("t"), now=now)
            self.merchant_id = open_account(s, MERCHANT, now=now).id
            s.commit()

    @contextmanager
    def session(self):
        with self.sf() as s, tenant_scope(self.tid):
            yield s

    def issue_card(self) -> int:
        person = self.api.post("/api/v1/people", json={"person_no": f"P{os.getpid()}x{id(self)}",
                               "name": "张三", "identity_class": "staff"})  # fmt: skip
        assert person.status_code == 201, person.get_json()
        card = self.api.post(f"/api/v1/people/{person.get_json()['id']}/cards",
                             json={"card_no": f"C{id(self) % 10**9}", "kind": "cpu"})  # fmt: skip
        assert card.status_code == 201, card.get_json()
        return card.get_json()["id"]

    def clear(self, records) -> dict:
        body = {"merchant_account_id": self.merchant_id,
                "records": [r.to_bytes().hex() for r in records]}  # fmt: skip
        resp = self.api.post("/api/v1/clearing/batches", json=body)
        assert resp.status_code == 201, resp.get_json()
        return resp.get_json()

    def entries(self) -> int:
        with self.session() as s:
            return s.query(Entry).count()


class ApiLoadHsm:
    """The terminal's host link: sends the load request to the card centre's API."""

    def __init__(self, api, card_id):
        self.api, self.card_id = api, card_id

    def verify_load_mac1_and_make_mac2(self, request):
        body = {
            "amount_fen": request.amount, "online_counter": request.counter,
            "balance_fen": request.balance, "rnd": request.rnd.hex(), "mac1": request.mac1.hex(),
            "terminal": request.terminal.hex(), "key_version": request.key_version,
            "asn": request.card.asn.hex(),
        }  # fmt: skip
        resp = self.api.post(f"/api/v1/cards/{self.card_id}/loads", json=body)
        assert resp.status_code == 200, resp.get_json()
        got = resp.get_json()
        return LoadAuthorisation(bytes.fromhex(got["mac2"]), bytes.fromhex(got["date"]),
                                 bytes.fromhex(got["time"]), got["host_serial"])  # fmt: skip


def card_life(centre: Centre, purchases=(120, 80, 250, 50)):
    """Issue, personalise, load 1000 fen and buy offline; returns (card, psam, records, unwrap)."""
    card_id = centre.issue_card()
    resp = centre.api.post(f"/api/v1/cards/{card_id}/personalisation")
    assert resp.status_code == 201, resp.get_json()
    pkg = resp.get_json()
    with centre.session() as s:
        service = ceremony_service(centre.keyring, s, centre.tid, centre.now)
        unwrap = unwrapper(*transport_key(service, centre.tid))
        psam = psam_for(service, centre.tid, unwrap)
        s.commit()
    card = card_from_package(pkg, unwrap)
    loaded = load(InProcessChannel(card), ApiLoadHsm(centre.api, card_id), amount=1_000,
                  terminal=TERMINAL, pin=PIN)  # fmt: skip
    records = [loaded.record] + [buy(card, psam, amount) for amount in purchases]
    return card, psam, records, pkg


@pytest.mark.parametrize("algorithm", list(Algorithm), ids=lambda a: a.value)
def test_card_life_through_the_api_clears_every_record_and_balances_the_float(
    api, keyring, session_factory, now, algorithm
):
    centre = Centre(api, keyring, session_factory, now, algorithm)
    card, psam, records, pkg = card_life(centre)
    assert pkg["algorithm"] == algorithm.value
    assert card.image.purse.balance == 1_000 - 500

    report = centre.clear(records)

    assert report["counts"] == {"ok": 5, "bad_tac": 0, "duplicate": 0, "gap": 0}
    assert report["posted_fen"] == 500
    with centre.session() as s:
        assert balance_of(s, tenant_account(s, "card_float")) == 500  # loaded 1000, spent 500
        assert balance_of(s, tenant_account(s, "cash_desk")) == 1_000
        assert verify(s).ok

    # A forged TAC, a replayed file and a missing counter.
    forged = tampered(buy(card, psam, 10))
    entries = centre.entries()
    assert centre.clear([forged])["counts"]["bad_tac"] == 1
    replay = centre.clear(records)
    assert replay["counts"] == {"ok": 0, "bad_tac": 0, "duplicate": 5, "gap": 0}
    assert centre.entries() == entries
    buy(card, psam, 20)  # lost: never uploaded
    late = buy(card, psam, 30)
    gap = centre.clear([late])
    assert gap["counts"]["gap"] == 1
    assert "missing" in gap["problems"][0]
    with centre.session() as s:
        assert balance_of(s, tenant_account(s, "card_float")) == 500 - 30
        assert verify(s).ok


def test_load_retried_with_the_same_counter_returns_the_same_mac2_and_posts_once(
    api, keyring, session_factory, now
):
    centre = Centre(api, keyring, session_factory, now, Algorithm.SM4)
    card_id = centre.issue_card()
    pkg = centre.api.post(f"/api/v1/cards/{card_id}/personalisation").get_json()
    with centre.session() as s:
        unwrap = unwrapper(
            *transport_key(ceremony_service(keyring, s, centre.tid, now), centre.tid)
        )
        s.commit()
    card = card_from_package(pkg, unwrap)
    host = ApiLoadHsm(api, card_id)
    answers = []

    class Twice:
        def verify_load_mac1_and_make_mac2(self, request):
            answers.append(host.verify_load_mac1_and_make_mac2(request))
            answers.append(host.verify_load_mac1_and_make_mac2(request))
            return answers[0]

    load(InProcessChannel(card), Twice(), amount=300, terminal=TERMINAL, pin=PIN)
    assert answers[0] == answers[1]
    with centre.session() as s:
        assert balance_of(s, tenant_account(s, "card_float")) == 300


def test_load_with_a_wrong_mac1_is_refused_and_posts_nothing(api, keyring, session_factory, now):
    centre = Centre(api, keyring, session_factory, now, Algorithm.SM4)
    card_id = centre.issue_card()
    assert centre.api.post(f"/api/v1/cards/{card_id}/personalisation").status_code == 201
    body = {"amount_fen": 100, "online_counter": 0, "balance_fen": 0, "rnd": "01020304",
            "mac1": "00000000", "terminal": TERMINAL.hex(), "key_version": 1}  # fmt: skip
    resp = api.post(f"/api/v1/cards/{card_id}/loads", json=body)
    assert resp.status_code == 422
    with centre.session() as s:
        assert balance_of(s, tenant_account(s, "card_float")) == 0


def test_personalisation_refused_for_an_id_only_card(api, keyring):
    person = api.post("/api/v1/people", json={"person_no": f"Q{os.getpid()}",
                      "name": "李四", "identity_class": "staff"}).get_json()  # fmt: skip
    card = api.post(f"/api/v1/people/{person['id']}/cards",
                    json={"card_no": f"ID{os.getpid()}", "kind": "id"}).get_json()  # fmt: skip
    assert api.post(f"/api/v1/cards/{card['id']}/personalisation").status_code == 422


def test_clearing_refused_without_the_permission(make_api_user, keyring):
    clerk = make_api_user(roles=("card_centre",))
    resp = clerk.post("/api/v1/clearing/batches", json={"merchant_account_id": 1,
                      "records": ["00" * 80]})  # fmt: skip
    assert resp.status_code == 403


# ------------------------------------------------------------------------- no clear keys at rest
def _database_bytes(engine) -> bytes:
    """Every byte the database holds: the SQLite file and its WAL, or on PostgreSQL every
    table's rows through COPY (text; bytea comes out as hex)."""
    if engine.dialect.name == "sqlite":
        path = engine.url.database
        files = [Path(path), Path(path + "-wal")]
        return b"".join(f.read_bytes() for f in files if f.exists())
    out = bytearray()
    with engine.connect() as conn:
        tables = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
        names = [t for (t,) in tables]
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            for name in names:
                with cur.copy(f'COPY (SELECT * FROM "{name}") TO STDOUT') as copy:
                    for chunk in copy:
                        out += bytes(chunk)
    return bytes(out)


def _forms(key: bytes) -> list[bytes]:
    return [key, key.hex().encode(), key.hex().upper().encode()]


@pytest.mark.parametrize("algorithm", list(Algorithm), ids=lambda a: a.value)
def test_neither_key_store_nor_database_holds_a_clear_key(
    api, keyring, session_factory, engine, now, tmp_path, algorithm
):
    centre = Centre(api, keyring, session_factory, now, algorithm)
    masters = {name: os.urandom(16) for name in (*PURSE_KEYS, TRANSPORT)}
    with centre.session() as s:  # key ceremony: masters entered as components
        service = ceremony_service(keyring, s, centre.tid, now)
        for name, key in masters.items():
            service.import_master(module=CARD_CENTRE, tenant_id=centre.tid, application=PURSE,
                                  key_name=name, version=1,
                                  components=split_key(algorithm, key, 2))  # fmt: skip
        s.commit()
    card, _psam, records, pkg = card_life(centre)
    assert centre.clear(records)["counts"]["ok"] == len(records)

    asn = bytes.fromhex(pkg["asn"])
    secrets = {f"master {n}": k for n, k in masters.items()}
    for name in PURSE_KEYS:
        card_key = alg.diversify(algorithm, masters[name], asn)
        assert card.image.keys[name][1].key == card_key
        secrets[f"card {name}"] = card_key
    secrets["TAC key"] = alg.tac_key(algorithm, secrets["card DTK"])
    secrets["KEK"] = KEK
    store = (tmp_path / "keys.store").read_bytes()
    database = _database_bytes(engine)
    for what, key in secrets.items():
        for form in _forms(key):
            assert form not in store, f"{what} found in the key store file"
            assert form not in database, f"{what} found in the database"
