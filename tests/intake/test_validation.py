"""The fast POST path's e-mail check accepts exactly what Django's validate_email accepts (the
rules DRF's EmailField applies), domain verdicts remembered or not."""

import pytest
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from apps.intake.validation import email_valid, lead_validate

ADDRESSES = [
    "a@b.co",
    "first.last+tag@sub.example.com",
    "UPPER@EXAMPLE.COM",
    "user@localhost",
    "x@[127.0.0.1]",
    "x@[IPv6:::1]",
    "x@[300.1.1.1]",
    '"quoted local"@example.com',
    "user@exämple.com",
    "üser@example.com",
    "",
    "plain",
    "@example.com",
    "a@",
    "a@b",
    "a..b@example.com",
    ".a@example.com",
    "a@-example.com",
    "a@example..com",
    "a@example.com.",
    "a b@example.com",
    "a@exa mple.com",
    "a@" + "l" * 64 + ".com",
    "a@" + "l" * 63 + ".com",
    "a" * 300 + "@example.com",
    "a@b@example.com",
]


def django_accepts(address: str) -> bool:
    try:
        validate_email(address)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("address", ADDRESSES)
def test_email_check_agrees_with_djangos_validate_email(address):
    expected = django_accepts(address)
    assert email_valid(address) is expected
    assert email_valid(address) is expected  # the domain's verdict now comes from the cache


def test_the_corpus_holds_addresses_either_way():
    verdicts = {django_accepts(address) for address in ADDRESSES}
    assert verdicts == {True, False}


def test_an_invalid_email_is_reported_with_drfs_message():
    _, errors = lead_validate({"email": "a..b@example.com"})
    assert errors == {"email": ["Enter a valid email address."]}
    _, errors = lead_validate({"email": 42})
    assert errors == {"email": ["Enter a valid email address."]}
    lead, errors = lead_validate({"email": "  Ada@Example.com ", "name": 7})
    assert errors is None
    assert lead == {"email": "Ada@Example.com", "name": "7", "priority": "normal"}
