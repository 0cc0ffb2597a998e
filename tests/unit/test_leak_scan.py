"""The leak scan finds a secret in every form it takes in text, and names it without repeating it."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

from tests.support import leaks


def test_a_secret_is_found_plain_base64_url_quoted_and_inside_basic_auth():
    password = leaks.secret_value("scan-check-password")
    leaks.basic_auth("reader", password)
    header = "Basic " + base64.b64encode(f"reader:{password}".encode()).decode()
    for text in (
        f"connecting with {password}",
        json.dumps({"data": {"p": base64.b64encode(password.encode()).decode()}}),
        f"GET /x?token={quote(password + '/+', safe='')}",
        f"Authorization: {header}",
    ):
        found = leaks.find(text)
        assert found and all(password not in hit for hit in found), text


def test_credentials_in_a_url_are_found_whatever_they_are_unless_replaced_by_asterisks():
    assert leaks.find("fetching https://someone:anything@mirror.example/simple") == ["URL credentials (https://…)"]
    assert leaks.find("fetching https://someone:***@mirror.example/simple") == ["URL credentials (https://…)"]
    assert leaks.find("Looking in indexes: http://***:***@10.1.0.1:8080/simple") == []


def test_text_without_secrets_finds_nothing():
    leaks.secret_value("scan-check-other")
    assert leaks.find("phase=Ready version=3 https://mirror.example/simple user@example.com") == []
