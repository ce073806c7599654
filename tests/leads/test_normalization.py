"""Pool A's normalization: e-mail and phone forms that dedup, scoring and the CRM rely on."""

import pytest

from apps.leads import normalization
from apps.leads.normalization import email_domain, email_normalize, phone_normalize


def test_email_is_trimmed_and_lower_cased():
    assert email_normalize("  Ada@Analytical.IO ") == "ada@analytical.io"


@pytest.mark.parametrize(
    ("email", "domain"),
    [("ada@analytical.io", "analytical.io"), ('"a@b"@Example.COM.', "example.com"), ("no-at", "")],
)
def test_email_domain_is_after_the_last_at(email, domain):
    assert email_domain(email) == domain


@pytest.mark.parametrize(
    ("phone", "region", "e164"),
    [
        ("+44 20 7946 0958", "", "+442079460958"),
        ("020 7946 0958", "gb", "+442079460958"),
        ("020 7946 0958", " uk ", "+442079460958"),  # an alias senders write
        ("(415) 555-2671", "US", "+14155552671"),
        ("  ", "gb", ""),
        ("", "", ""),
    ],
)
def test_phone_becomes_e164_with_the_region_as_default_country(phone, region, e164):
    assert phone_normalize(phone, region) == e164


@pytest.mark.parametrize(
    ("phone", "region"),
    [("call me", "gb"), ("020 7946 0958", ""), ("12", "us"), ("020 7946 0958", "gbr")],
)
def test_phone_that_does_not_parse_is_kept_as_given(phone, region):
    assert phone_normalize(f" {phone} ", region) == phone


def test_a_repeated_number_is_parsed_once():
    normalization._phone_e164.cache_clear()
    for _ in range(3):
        assert phone_normalize("+1 415 555 2671", "us") == "+14155552671"
        assert phone_normalize("+1 415 555 2671", "US") == "+14155552671"
    info = normalization._phone_e164.cache_info()
    assert (info.misses, info.hits) == (1, 5)
    assert info.maxsize == normalization.PHONE_CACHE_SIZE
