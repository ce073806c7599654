"""The intake's body reading and validation against every hostile lead (tests/hostile.py), without
the live stack: what is refused names its field; what is accepted is what pool A can store."""

import orjson
import pytest

from apps.intake.errors import ApiError
from apps.intake.json_body import body_decode
from apps.intake.validation import PAYLOAD_DEPTH_MAX, lead_validate
from apps.leads.normalization import email_normalize, phone_normalize
from tests.hostile import (
    INVALID,
    PARSE_ERROR,
    STORED,
    batch_body,
    hostile_leads,
    nested,
)
from tests.hostile import PAYLOAD_DEPTH_MAX as DOCUMENTED_DEPTH

CASES = hostile_leads("unit")


def validate(body: bytes):
    value, deep = body_decode(body)
    return lead_validate(value, deep)


def strings(value):
    """Every key and string in a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def assert_storable(lead: dict) -> None:
    """What pool A does to a lead's fields (apps/leads/services.py) fits its columns."""
    assert len(email_normalize(lead["email"])) <= 254
    assert len(phone_normalize(lead.get("phone", ""), lead.get("region", ""))) <= 40
    orjson.dumps(lead)  # what the inbox entry and jsonb get: no lone surrogate, no deep nesting
    assert not any("\x00" in text for text in strings(lead))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.test_id)
def test_each_hostile_lead_gets_its_answer(case):
    if case.answer == PARSE_ERROR:
        with pytest.raises(ApiError) as refused:
            validate(case.body)
        assert refused.value.code == "parse_error"
        return
    lead, errors = validate(case.body)
    if case.answer == INVALID:
        assert errors is not None and case.field in errors, errors
        assert all(isinstance(reason, str) and reason for reason in errors[case.field])
    else:
        assert case.answer == STORED
        assert errors is None, errors
        assert_storable(lead)


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.answer != PARSE_ERROR], ids=lambda case: case.test_id
)
def test_a_hostile_lead_in_a_batch_costs_only_itself(case):
    clean = b'{"email":"clean@example.com","name":"Ada"}'
    leads, deep = body_decode(batch_body([clean, case.body, clean]))
    verdicts = [lead_validate(lead, deep) for lead in leads["leads"]]
    assert (
        verdicts[0]
        == verdicts[2]
        == (
            {"email": "clean@example.com", "name": "Ada", "priority": "normal"},
            None,
        )
    )
    _, errors = verdicts[1]
    assert (errors is None) == (case.answer == STORED)
    if case.answer == INVALID:
        assert case.field in errors


def test_the_documented_depth_is_the_one_enforced():
    assert DOCUMENTED_DEPTH == PAYLOAD_DEPTH_MAX
    ok = orjson.dumps({"email": "a@b.co", "payload": nested(PAYLOAD_DEPTH_MAX)})
    assert validate(ok)[1] is None
    deep = orjson.dumps({"email": "a@b.co", "payload": nested(PAYLOAD_DEPTH_MAX + 1)})
    _, errors = validate(deep)
    assert errors["payload"][0].startswith(f"is nested deeper than {PAYLOAD_DEPTH_MAX} levels")


def test_a_nul_is_reported_at_its_place_in_the_payload():
    body = orjson.dumps({"email": "a@b.co", "payload": {"form": {"a/b": [0, "x\x00"]}}})
    _, errors = validate(body)
    assert errors == {
        "payload": [
            "holds text that cannot be stored at /form/a~1b/1: Null characters are not allowed."
        ]
    }


def test_a_surrogate_is_reported_with_its_code_point():
    _, errors = validate(b'{"email":"a@b.co","company":"\\udabc"}')
    assert errors == {"company": ["Surrogate characters are not allowed: U+DABC."]}


def test_an_email_that_grows_when_lower_cased_is_refused_with_its_lower_cased_length():
    email = "a@" + ("İ" * 60 + ".") * 3 + "io"
    _, errors = validate(orjson.dumps({"email": email}))
    assert errors == {
        "email": [
            "Ensure this field has no more than 254 characters once lower-cased (it has 367)."
        ]
    }


def test_the_nul_filter_skips_the_deep_checks_only_when_no_string_can_hold_a_nul():
    assert body_decode(b'{"email":"a@b.co"}') == ({"email": "a@b.co"}, False)
    assert body_decode(b'{"email":"a@b.co","name":"\\u0000"}')[1] is True
    # A backslash, then the text u0000: a false alarm, checked deeply and accepted.
    value, deep = body_decode(b'{"email":"a@b.co","name":"\\\\u0000"}')
    assert deep is True
    assert lead_validate(value, deep) == (
        {"email": "a@b.co", "name": "\\u0000", "priority": "normal"},
        None,
    )


@pytest.mark.parametrize(
    "body",
    [c.body for c in CASES if c.answer == STORED]
    + [b'{"n":[1,-2,3.5,1e308,18446744073709551615]}'],
)
def test_the_second_reading_agrees_with_orjson_on_what_orjson_reads(body):
    from apps.intake.json_body import _lenient

    assert _lenient.decode(body.decode()) == orjson.loads(body)


def test_the_second_reading_reads_big_integers_as_orjson_does():
    from apps.intake.json_body import _lenient

    for text in ("18446744073709551616", "-9223372036854775809", "1" * 30):
        assert _lenient.decode(text) == orjson.loads(text)
        assert type(_lenient.decode(text)) is type(orjson.loads(text))


@pytest.mark.parametrize(
    "body",
    [
        b'"\\ud800"',  # a lone surrogate
        b'"\xff"',  # not UTF-8
        b'"\xed\xa0\x80"',  # a surrogate encoded in UTF-8
        b"1e400",  # past a double
        b"NaN",
        b"\xef\xbb\xbf{}",  # a byte order mark
        b'"\x01"',  # a raw control character
        b"[" * 1025 + b"]" * 1025,
    ],
)
def test_orjson_refuses_these_whole(body):
    # The reason for json_body's second reading; noticed here if an orjson release changes it.
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)


PHONES = [
    "＋１ ４１５ ５５５ ０１００",
    "+٤٤ ٢٠ ٧٩٤٦ ٠٩٥٨",
    "۰۹۱۲ ۳۴۵ ۶۷۸۹",
    "+1 415 555 0100 ext. 1234567890",
    "+" + "9" * 39,
    "1" * 40,
    "\u200f+44 20 7946 0958\u200f",
    "+1-800-FLOWERS",
    "tel:+1-415-555-0100;ext=12",
    "(+44) (0) 20 7946 0958 x 1234567890123",
    "𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗𝟎",
    "++++++++++++++++++++++++++++++++++++++++",
    "\ufeff+44 20 7946 0958",
]


@pytest.mark.parametrize("phone", PHONES)
@pytest.mark.parametrize("region", ["", "gb", "us", "ß", "zz", "r" * 50])
def test_pool_as_phone_normalization_never_outgrows_the_column(phone, region):
    lead, errors = validate(orjson.dumps({"email": "a@b.co", "phone": phone, "region": region}))
    assert errors is None, errors
    normalized = phone_normalize(lead["phone"], lead["region"])
    assert len(normalized) <= 40
