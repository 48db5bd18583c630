"""First API behaviours (the full API suite lives beside this file)."""


def test_login_then_create_person(api):
    resp = api.post(
        "/api/v1/people", json={"person_no": "A1", "name": "李四", "identity_class": "staff"}
    )
    assert resp.status_code == 201
    assert resp.get_json()["name"] == "李四"
