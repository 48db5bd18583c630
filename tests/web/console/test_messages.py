"""What platform services say reaches a Chinese console in Chinese: the message catalogue of
``onecard.web.console.messages`` and the pages that show service errors."""

from __future__ import annotations

import ast
import html
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from tests.web.console.conftest import ConsoleUser

import onecard.platform
from onecard.platform import errors
from onecard.web.console.messages import localise, unmatched

PLATFORM = Path(onecard.platform.__file__).parent


def _error_classes(base: type = errors.OneCardError) -> set[str]:
    names = {base.__name__}
    for sub in base.__subclasses__():
        names |= _error_classes(sub)
    return names


def _sample(node: ast.expr) -> str | None:
    """The text a literal message argument produces, each ``{value}`` replaced by a token."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = [
            v.value if isinstance(v, ast.Constant) else f"v{n}" for n, v in enumerate(node.values)
        ]
        return "".join(str(p) for p in parts)
    return None  # built elsewhere (str(err), self.reason): no template to check


def platform_messages() -> Iterator[tuple[str, str]]:
    """``(where, sample message)`` of every literal message the platform raises an error with,
    and of the ``ValueError`` texts of its input models (pydantic shows them to operators)."""
    classes = _error_classes()
    for path in sorted(PLATFORM.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            validator = name == "ValueError" and path.name == "schemas.py"
            sample = _sample(node.args[0]) if name in classes or validator else None
            if sample is not None:
                yield f"{path.relative_to(PLATFORM)}:{node.lineno}", sample


@pytest.fixture
def zh(app: Flask) -> Iterator[None]:
    """A request of a Chinese console page (the locale the catalogue is looked up in)."""
    with app.test_request_context("/console/", headers={"Accept-Language": "zh-CN"}):
        yield


def test_every_literal_platform_message_has_a_template() -> None:
    found = list(platform_messages())
    assert len(found) > 100  # the scan sees the platform's raises
    missing = unmatched(m for _where, m in found)
    lacking = [f"{where}: {m}" for where, m in found if m in missing]
    assert lacking == [], "add these to onecard.web.console.messages.TEMPLATES:\n" + "\n".join(
        lacking
    )


@pytest.mark.usefixtures("zh")
def test_every_platform_message_has_chinese_text() -> None:
    untranslated = [m for _where, m in platform_messages() if localise(m) == m]
    assert untranslated == []


@pytest.mark.usefixtures("zh")
def test_values_are_kept_and_vocabulary_translated() -> None:
    assert localise("person number P-007 already exists") == "人员编号 P-007 已存在"
    assert localise("cannot report loss a returned card") == "状态为“已退卡”的卡不能挂失"
    assert localise("record 3: account 12 not found") == "第 3 条记录：找不到账户 12"
    assert localise("Value error, valid_until is before valid_from") == "有效期止早于有效期起"


@pytest.mark.usefixtures("zh")
def test_a_message_without_template_is_shown_as_it_is() -> None:
    assert localise("the HSM said no") == "the HSM said no"


def test_english_console_shows_the_services_text(app: Flask) -> None:
    with app.test_request_context("/console/", headers={"Accept-Language": "en"}):
        assert localise("person number P-007 already exists") == (
            "person number P-007 already exists"
        )
        assert localise("Value error, valid_until is before valid_from") == (
            "valid_until is before valid_from"
        )


def _text(resp: object) -> str:
    return html.unescape(resp.get_data(as_text=True))  # type: ignore[attr-defined]


def test_duplicate_person_number_is_refused_in_chinese(
    admin: ConsoleUser, person_via_console: Callable[..., int]
) -> None:
    person_via_console(admin, person_no="DUP-ZH-1")
    dup = admin.post(
        "/console/people/new", {"person_no": "DUP-ZH-1", "name": "李雷", "identity_class": "staff"}
    )
    assert dup.status_code == 422
    assert "人员编号 DUP-ZH-1 已存在" in _text(dup)


def test_refund_beyond_the_purse_is_refused_in_chinese(
    admin: ConsoleUser, person_via_console: Callable[..., int]
) -> None:
    pid = person_via_console(admin)
    top_up = {"amount": "10.00", "channel": "cash"}
    assert admin.post(f"/console/accounts/person/{pid}/top-up", top_up).status_code == 303
    short = admin.post(
        f"/console/accounts/person/{pid}/refund", {"refund_amount": "25", "confirmed": "yes"}
    )
    assert short.status_code == 422
    page = _text(short)
    assert 'id="e-refund_amount"' in page
    assert "余额将低于最低限额" in page
    assert "would fall below" not in page


def test_missing_name_is_reported_in_chinese(admin: ConsoleUser) -> None:
    resp = admin.post("/console/people/new", {"person_no": "NONAME1", "identity_class": "staff"})
    assert resp.status_code == 422
    assert "必填" in _text(resp)
    assert "Field required" not in _text(resp)
