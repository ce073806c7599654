"""Pool A's normalization: the forms that dedup, scoring and the CRM rely on."""

import functools

import phonenumbers

# Regions that senders write but that are not ISO 3166 codes.
_REGION_ALIASES = {"UK": "GB", "EN": "GB"}
# Parsing a number costs ~50 µs, most of pool A's time per lead; a tenant's forms, retries and
# duplicates repeat numbers, so each process remembers the last ones (~200 bytes each).
PHONE_CACHE_SIZE = 32_768


def email_normalize(email: str) -> str:
    return email.strip().lower()


def email_domain(email: str) -> str:
    """The part after the last @, lower-case; empty when there is none."""
    _, at, domain = email.rpartition("@")
    return domain.strip().lower().rstrip(".") if at else ""


def phone_normalize(phone: str, region: str = "") -> str:
    """E.164 when the number parses (the lead's region is the default country), else as given."""
    phone = (phone or "").strip()
    if not phone:
        return ""
    country = (region or "").strip().upper()
    return _phone_e164(phone, _REGION_ALIASES.get(country, country))


@functools.lru_cache(maxsize=PHONE_CACHE_SIZE)
def _phone_e164(phone: str, country: str) -> str:
    try:
        parsed = phonenumbers.parse(phone, country if len(country) == 2 else None)
    except phonenumbers.NumberParseException:
        return phone
    if not phonenumbers.is_possible_number(parsed):
        return phone
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
