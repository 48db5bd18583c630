"""Console login: password, TOTP, CSRF, lockout message, logout, tenant switching, language."""

from __future__ import annotations

from datetime import timedelta

import pyotp

from onecard.platform.clock import utcnow


def test_pages_redirect_to_login_when_logged_out(client):
    resp = client.get("/console/people")
    assert resp.status_code == 302
    assert "/console/login?next=/console/people" in resp.headers["Location"]


def test_login_then_home_opens_first_menu_page(admin):
    resp = admin.get("/console/")
    assert resp.status_code == 302
    assert resp.headers["Location"].endswith("/console/people")


def test_wrong_password_shows_form_error(make_console_user):
    user = make_console_user(login=False)
    user.password = "wrong-password-123"
    resp = user.login()
    assert resp.status_code == 401
    assert "Tenant, username or password is wrong." in resp.get_data(as_text=True) or (
        "租户、用户名或密码错误" in resp.get_data(as_text=True)
    )


def test_login_post_without_csrf_token_is_refused(make_console_user):
    user = make_console_user(login=False)
    resp = user.client.post(
        "/console/login",
        data={"tenant": user.tenant.slug, "username": user.username, "password": user.password},
    )
    assert resp.status_code == 400
    assert "CSRF" in resp.get_data(as_text=True)


def test_every_console_post_needs_the_token(admin):
    resp = admin.client.post("/console/people/new", data={"person_no": "X1", "name": "a"})
    assert resp.status_code == 400


def test_login_with_totp(make_console_user):
    user = make_console_user()
    resp = user.post("/console/profile", {"confirmed": "yes"})
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    secret = html.split('id="totp-secret">', 1)[1].split("<", 1)[0]
    user.post("/console/logout")
    assert user.get("/console/people").status_code == 302
    first = user.login()
    assert first.status_code == 401
    assert 'name="totp"' in first.get_data(as_text=True)
    code = pyotp.TOTP(secret).at(utcnow())
    ok = user.login(totp=code)
    assert ok.status_code == 303
    assert user.get("/console/people").status_code == 200
    user.post("/console/logout")
    replay = user.login(totp=code)
    assert replay.status_code == 401  # a code is good for one login only
    later = pyotp.TOTP(secret).at(utcnow() + timedelta(seconds=30))
    assert user.login(totp=later).status_code == 303


def test_enabling_totp_asks_for_confirmation_first(admin):
    resp = admin.post("/console/profile")
    assert resp.status_code == 200
    assert 'name="confirmed" value="yes"' in resp.get_data(as_text=True)
    assert "totp-secret" not in resp.get_data(as_text=True)


def test_logout_ends_the_session(admin):
    admin.post("/console/logout")
    assert admin.get("/console/people").status_code == 302


def test_next_parameter_only_goes_to_console_paths(make_console_user):
    user = make_console_user(login=False)
    resp = user.post(
        "/console/login",
        {
            "tenant": user.tenant.slug,
            "username": user.username,
            "password": user.password,
            "next": "https://evil.example/x",
        },
    )
    assert resp.headers["Location"].endswith("/console/")


def test_tenant_switcher_moves_between_logged_in_tenants(admin, make_console_user):
    other = make_console_user(login=False)
    admin.tenant, first_tenant = other.tenant, admin.tenant
    admin.username = other.username
    assert admin.login().status_code == 303  # second tenant, same browser
    html = admin.get("/console/people").get_data(as_text=True)
    assert 'id="tenant-switch"' in html
    admin.post("/console/switch/tenant", {"tenant_id": str(first_tenant.id)})
    with admin.client.session_transaction() as s:
        assert s["active"] == first_tenant.id


def test_chinese_is_default_for_zh_browsers_and_english_for_en(make_console_user):
    user = make_console_user(login=False)
    zh = user.get("/console/login", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert "登录" in zh.get_data(as_text=True)
    en = user.get("/console/login", headers={"Accept-Language": "en-GB,en;q=0.8"})
    assert "Log in" in en.get_data(as_text=True)
    assert "登录" not in en.get_data(as_text=True).split("<main", 1)[1]


def test_language_switch_overrides_the_browser(admin):
    admin.post("/console/language", {"lang": "en", "next": "/console/people"})
    html = admin.get("/console/people", headers={"Accept-Language": "zh-CN"}).get_data(True)
    assert "New person" in html
    admin.post("/console/language", {"lang": "zh"})
    html = admin.get("/console/people", headers={"Accept-Language": "en"}).get_data(True)
    assert "新建人员" in html


def test_security_headers_on_console_pages(admin):
    resp = admin.get("/console/people")
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Frame-Options"] == "DENY"
    cookie = resp.headers.get("Set-Cookie", "")
    if cookie:
        assert "HttpOnly" in cookie


def test_session_cookie_is_httponly_and_samesite(make_console_user):
    user = make_console_user(login=False)
    resp = user.client.get("/console/login")
    cookie = resp.headers["Set-Cookie"]
    assert "onecard_console=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie


def test_console_login_leaves_no_api_token_usable(admin, client):
    resp = client.get("/api/v1/auth/me", headers={"Cookie": "x=y"})
    assert resp.status_code == 401


def test_vendored_chart_library_is_served(client):
    resp = client.get("/static/vendor/chart.umd.min.js")
    assert resp.status_code == 200, "run `make install` (npm ci + copy into static/vendor)"
    assert b"Chart" in resp.data[:5000]
    resp.close()


def test_missing_objects_get_an_html_error_page(admin):
    resp = admin.get("/console/people/999999999")
    assert resp.status_code == 404
    assert resp.mimetype == "text/html"
    assert admin.get("/console/people/import/nope").status_code == 404
