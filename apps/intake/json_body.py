"""A request body as JSON: orjson, and a lenient second reading for what orjson refuses whole.

orjson refuses a body holding a lone surrogate (\\ud800), bytes that are not UTF-8, or a number
past a double (1e400, NaN): for a batch, one such lead would cost the other 499 a 400 without
a word on which lead or field. So a body orjson refuses is read again by the standard library,
which takes those and gives them to validation as they are (surrogates in text, numbers as
Unrepresentable), so the one lead is refused naming its field and the others go on. What
neither reads (a truncated body, a raw control character in a string, a BOM, nesting past
either parser's depth) is a 400 parse_error for the whole request, as before.

The second reading agrees with orjson on every value orjson takes: integers within 64 bits
stay integers, larger ones become floats, floats are correctly rounded by both.
"""

import json
import math

import orjson

from apps.intake.errors import ApiError

# The text \u0000 in the raw bytes: the only way JSON spells NUL (a raw 0x00 byte is not JSON).
# Its absence spares every lead of the body the deeper checks; its presence (or a backslash
# escaped before "u0000", a false alarm) makes validation look at every string.
NUL_ESCAPE = b"\\u0000"


class Unrepresentable:
    """A number that JSON (and so orjson, jsonb, the CRM) cannot carry, as it was written."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


def _number(text: str):
    value = float(text)
    return value if math.isfinite(value) else Unrepresentable(text)


def _integer(text: str):
    # int() of more than 4,300 digits raises; orjson reads past 64 bits as a float anyway.
    if len(text) <= 20:
        value = int(text)
        if -(2**63) <= value < 2**64:
            return value
    return _number(text)


_lenient = json.JSONDecoder(parse_float=_number, parse_int=_integer, parse_constant=Unrepresentable)


def body_decode(raw: bytes) -> tuple[object, bool]:
    """(the body's JSON value, deep): deep when validation must check every string and number
    for what cannot be stored. Raises ApiError 400 parse_error when it is not JSON."""
    try:
        return orjson.loads(raw), NUL_ESCAPE in raw
    except orjson.JSONDecodeError as exc:
        refusal = exc
    try:
        # surrogateescape: a byte that is not UTF-8 becomes a lone surrogate (U+DC80-U+DCFF),
        # which validation then names in its field.
        return _lenient.decode(raw.decode("utf-8", "surrogateescape")), True
    except (ValueError, RecursionError):
        raise ApiError(400, "parse_error", f"JSON parse error - {refusal}") from None
