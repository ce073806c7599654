"""What a lead must look like. Every field error is reported, with its reason.

Plain Python over the decoded JSON (no serializer framework): on the intake's hot path this
costs a few microseconds a lead, where DRF's Serializer cost most of the request. The rules
and the messages are the ones a DRF Serializer with these fields would give, plus what no
later stage can store (README "Lead fields"): a NUL anywhere, lone surrogates, an e-mail that
outgrows its column once lower-cased, a payload nested past PAYLOAD_DEPTH_MAX levels, a number
JSON cannot carry. These are refused here, with the field named, because after a 202 they
would fail pool A's batch instead.

The costly checks run only on a body that may need them (`deep`, apps/intake/json_body.py):
one that holds the text \\u0000, or that only the lenient parser could read.
"""

import functools
import json
import re

import orjson
from django.conf import settings
from django.core.validators import validate_email

from apps.intake.json_body import Unrepresentable
from leadflow.queues import TIERS

# Optional text fields and their maximum length (the columns of apps/leads/models.py).
TEXT_FIELDS = {
    "name": 200,
    "phone": 40,
    "company": 200,
    "source": 100,
    "campaign_id": 100,
    "region": 50,
}
EMAIL_MAX_LENGTH = 254
# Levels of objects and lists in a payload, the payload itself the first: deeper payloads are
# not data a CRM field maps to, and orjson cannot write one past 254 levels at all.
PAYLOAD_DEPTH_MAX = 32
_TEXT_FIELD_ITEMS = tuple(TEXT_FIELDS.items())
FIELDS = frozenset({"email", "priority", "payload", *TEXT_FIELDS})
_MISSING = object()
_SURROGATE = re.compile("[\ud800-\udfff]")
_ECHO_MAX = 50  # characters of a refused value repeated in its error message


def text_flaw(text: str) -> str | None:
    """Why PostgreSQL cannot store this text (DRF's CharField messages), or None."""
    if "\x00" in text:
        return "Null characters are not allowed."
    surrogate = _SURROGATE.search(text)
    if surrogate:
        return f"Surrogate characters are not allowed: U+{ord(surrogate.group()):X}."
    return None


def _text(value, max_length: int, deep: bool) -> tuple[str | None, str | None]:
    """A text field as DRF's CharField reads it: numbers become text, whitespace is trimmed."""
    if type(value) is not str:  # text is the usual case: checked first, and cheaply
        if value is None:
            return None, "This field may not be null."
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return None, "Not a valid string."
    text = str(value).strip()
    if len(text) > max_length:
        return None, f"Ensure this field has no more than {max_length} characters."
    if deep:
        flaw = text_flaw(text)
        if flaw:
            return None, flaw
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
    user_part, _, domain_part = email.rpartition("@")
    if not _USER_PART.match(user_part):
        return False
    return domain_part in validate_email.domain_allowlist or _domain_part_valid(domain_part)


def _email(value, deep: bool) -> tuple[str | None, str | None]:
    if value is _MISSING:
        return None, "This field is required."
    email, error = _text(value, EMAIL_MAX_LENGTH, deep)
    if error:
        return None, error
    if not email:
        return None, "This field may not be blank."
    if not email.isascii():
        # Django's user-part regex is ASCII, but case-insensitive: İ, ı, ſ and the Kelvin sign
        # pass it as i, s and k, and İ lower-cases to two characters. Pool A lower-cases.
        if not email.rpartition("@")[0].isascii():
            return None, "Enter a valid email address: the part before the @ must be ASCII."
        lowered = len(email.lower())
        if lowered > EMAIL_MAX_LENGTH:
            return None, (
                f"Ensure this field has no more than {EMAIL_MAX_LENGTH} characters once "
                f"lower-cased (it has {lowered})."
            )
    if not email_valid(email):
        return None, "Enter a valid email address."
    return email, None


def _pointer(path: tuple) -> str:
    """A place in the payload as a JSON Pointer (RFC 6901), odd characters as JSON escapes."""
    steps = (json.dumps(str(step))[1:-1].replace("~", "~0").replace("/", "~1") for step in path)
    return "/" + "/".join(steps)


def payload_flaw(payload: dict, deep: bool) -> str | None:
    """Why no later stage could take this payload: nesting past PAYLOAD_DEPTH_MAX, and when
    `deep`, a NUL or lone surrogate in a key or a string, or a number JSON cannot carry."""
    stack: list[tuple[object, int, tuple]] = [(payload, 1, ())]
    while stack:
        value, depth, path = stack.pop()
        if depth > PAYLOAD_DEPTH_MAX:
            return f"is nested deeper than {PAYLOAD_DEPTH_MAX} levels (at {_pointer(path)})"
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if deep and type(key) is str and (flaw := text_flaw(key)):
                return f"has a key that cannot be stored at {_pointer(path)}: {flaw}"
            if isinstance(item, dict | list):
                stack.append((item, depth + 1, (*path, key)))
            elif not deep:
                continue
            elif type(item) is str and (flaw := text_flaw(item)):
                return f"holds text that cannot be stored at {_pointer((*path, key))}: {flaw}"
            elif type(item) is Unrepresentable:
                return (
                    f"holds a number that JSON cannot carry at {_pointer((*path, key))}: "
                    f"{item} (numbers must be finite and fit a 64-bit float)"
                )
    return None


def _payload(value, deep: bool, max_bytes: int) -> tuple[dict | None, str | None]:
    if value is None:
        return {}, None
    if not isinstance(value, dict):
        return None, "must be a JSON object"
    if deep and (flaw := payload_flaw(value, deep=True)):
        return None, flaw
    try:
        dumped = orjson.dumps(value)
    except orjson.JSONEncodeError:  # past orjson's 254 levels: payload_flaw says where
        dumped = b""
    # A payload nested past the limit holds more brackets than the limit (and twice as many
    # bytes): count them (in C) and walk the payload only then.
    if not dumped or (
        len(dumped) > 2 * PAYLOAD_DEPTH_MAX
        and dumped.count(b"{") + dumped.count(b"[") > PAYLOAD_DEPTH_MAX
    ):
        flaw = payload_flaw(value, deep=False)
        if flaw or not dumped:
            return None, flaw or "cannot be written as JSON"
    if len(dumped) > max_bytes:
        return None, f"is {len(dumped)} bytes; the limit is {max_bytes} bytes"
    return value, None


def _priority_error(priority) -> str:
    if isinstance(priority, list | dict):
        # Named, not echoed: str() of one nested 1,000 deep recurses past Python's limit (a
        # 500, found while holding this path to its DRF contract, apps/intake/contract.py).
        return (
            f"a JSON {'array' if isinstance(priority, list) else 'object'} is not a valid choice."
        )
    shown = str(priority)
    if len(shown) > _ECHO_MAX:
        shown = shown[:_ECHO_MAX] + "…"
    return f'"{shown}" is not a valid choice.'


def lead_validate(
    raw, deep: bool = True, payload_max_bytes: int | None = None
) -> tuple[dict | None, dict | None]:
    """(the lead's fields, None) when valid, else (None, {field: [reason]}).

    The fields hold what was sent (text trimmed) and "priority", "normal" by default.
    `deep` False skips the NUL, surrogate and number checks, for a body known to need none.
    `payload_max_bytes` is settings.LEAD_PAYLOAD_MAX_BYTES, read once by a caller that
    validates many leads (a setting read costs about a microsecond).
    """
    # Long on purpose: each field's usual case (text that passes) is checked inline, and
    # anything else goes through the field's full reading (_email, _text), which gives the
    # same verdict on the usual case and the message on every other.
    if not isinstance(raw, dict):
        return None, {"non_field_errors": ["a lead must be a JSON object"]}
    errors: dict[str, list[str]] = {}
    lead: dict = {}

    value = raw.get("email", _MISSING)
    if type(value) is str:
        email = value.strip()
        if not (
            0 < len(email) <= EMAIL_MAX_LENGTH
            and email.isascii()  # a non-ASCII address has checks of its own (_email)
            and not (deep and "\x00" in email)  # ASCII text: NUL is its only flaw
            and email_valid(email)
        ):
            email = None
    else:
        email = None
    if email is None:
        email, error = _email(value, deep)
        if error:
            errors["email"] = [error]
    if email is not None:
        lead["email"] = email

    for name, max_length in _TEXT_FIELD_ITEMS:
        value = raw.get(name, _MISSING)
        if value is _MISSING:
            continue
        if type(value) is str:
            text = value.strip()
            if len(text) <= max_length and not (deep and text_flaw(text)):
                lead[name] = text
                continue
        text, error = _text(value, max_length, deep)
        if error:
            errors[name] = [error]
        else:
            lead[name] = text

    priority = raw.get("priority", "normal")
    if priority is None:
        errors["priority"] = ["This field may not be null."]
    elif not isinstance(priority, str) or priority not in TIERS:
        errors["priority"] = [_priority_error(priority)]
    else:
        lead["priority"] = priority

    value = raw.get("payload", _MISSING)
    if value is not _MISSING:
        if payload_max_bytes is None:
            payload_max_bytes = settings.LEAD_PAYLOAD_MAX_BYTES
        payload, error = _payload(value, deep, payload_max_bytes)
        if error:
            errors["payload"] = [error]
        else:
            lead["payload"] = payload

    if not raw.keys() <= FIELDS:
        for name in sorted(raw.keys() - FIELDS):
            errors[name] = ["unknown field"]
    return (None, errors) if errors else (lead, None)
