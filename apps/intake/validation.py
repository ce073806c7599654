"""What a lead must look like. Every field error is reported, with its reason.

Plain Python over the decoded JSON (no serializer framework): on the intake's hot path this
costs a few microseconds a lead, where DRF's Serializer cost most of the request. The rules
and the messages are the ones a DRF Serializer with these fields would give.
"""

import functools
import re

import orjson
from django.conf import settings
from django.core.validators import validate_email

from workers.queues import TIERS

# Optional text fields and their maximum length.
TEXT_FIELDS = {
    "name": 200,
    "phone": 40,
    "company": 200,
    "source": 100,
    "campaign_id": 100,
    "region": 50,
}
EMAIL_MAX_LENGTH = 254
FIELDS = frozenset({"email", "priority", "payload", *TEXT_FIELDS})
_MISSING = object()


def _text(value, max_length: int) -> tuple[str | None, str | None]:
    """A text field as DRF's CharField reads it: numbers become text, whitespace is trimmed."""
    if type(value) is not str:  # text is the usual case: checked first, and cheaply
        if value is None:
            return None, "This field may not be null."
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return None, "Not a valid string."
    text = str(value).strip()
    if len(text) > max_length:
        return None, f"Ensure this field has no more than {max_length} characters."
    return text, None


# Django's EmailValidator, step for step, with its verdict on a domain remembered: the domain
# check (a long regex) was half of a lead's validation, and leads repeat domains. The user-part
# regex is compiled here once (the validator's own is a lazy proxy, an indirection per call).
# tests/intake/test_validation.py holds this to what validate_email itself accepts.
_USER_PART = re.compile(validate_email.user_regex.pattern, validate_email.user_regex.flags)
_domain_part_valid = functools.lru_cache(maxsize=4096)(validate_email.validate_domain_part)


def email_valid(email: str) -> bool:
    """What django.core.validators.validate_email accepts."""
    if not email or "@" not in email or len(email) > 320:
        return False
    user_part, domain_part = email.rsplit("@", 1)
    if not _USER_PART.match(user_part):
        return False
    return domain_part in validate_email.domain_allowlist or _domain_part_valid(domain_part)


def _email(value) -> tuple[str | None, str | None]:
    if value is _MISSING:
        return None, "This field is required."
    email, error = _text(value, EMAIL_MAX_LENGTH)
    if error:
        return None, error
    if not email:
        return None, "This field may not be blank."
    if not email_valid(email):
        return None, "Enter a valid email address."
    return email, None


def _payload(value) -> tuple[dict | None, str | None]:
    if value is None:
        return {}, None
    if not isinstance(value, dict):
        return None, "must be a JSON object"
    size = len(orjson.dumps(value))
    if size > settings.LEAD_PAYLOAD_MAX_BYTES:
        return None, f"is {size} bytes; the limit is {settings.LEAD_PAYLOAD_MAX_BYTES} bytes"
    return value, None


def lead_validate(raw) -> tuple[dict | None, dict | None]:
    """(the lead's fields, None) when valid, else (None, {field: [reason]}).

    The fields hold what was sent (text trimmed) and "priority", "normal" by default.
    """
    if not isinstance(raw, dict):
        return None, {"non_field_errors": ["a lead must be a JSON object"]}
    errors: dict[str, list[str]] = {}
    lead: dict = {}

    email, error = _email(raw.get("email", _MISSING))
    if error:
        errors["email"] = [error]
    else:
        lead["email"] = email

    for name, max_length in TEXT_FIELDS.items():
        if name in raw:
            text, error = _text(raw[name], max_length)
            if error:
                errors[name] = [error]
            else:
                lead[name] = text

    priority = raw.get("priority", "normal")
    if priority is None:
        errors["priority"] = ["This field may not be null."]
    elif not isinstance(priority, str) or priority not in TIERS:
        errors["priority"] = [f'"{priority}" is not a valid choice.']
    else:
        lead["priority"] = priority

    if "payload" in raw:
        payload, error = _payload(raw["payload"])
        if error:
            errors["payload"] = [error]
        else:
            lead["payload"] = payload

    for name in sorted(raw.keys() - FIELDS):
        errors[name] = ["unknown field"]
    return (None, errors) if errors else (lead, None)
