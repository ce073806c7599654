"""Hostile leads: what a later stage could not take, and odd input it must take as sent.

Each HostileLead is one lead's JSON text (bytes, as a client sends it: some of it no JSON
encoder would write) and the answer it must get:
- "invalid": 400 naming `field` (single POST: in "fields"; batch: in the lead's result);
- "parse_error": the body is not JSON at all (a raw control character, a BOM, nesting past
  what any parser takes): the whole request is 400 parse_error (send it alone, not in a batch);
- "stored": odd but legal; accepted (202) and stored by pool A, never a 5xx.

`hostile_leads(tag)` gives every case, with e-mail addresses unique to `tag` so that dedup
never mistakes one run's lead for another's.
"""

import itertools
import json
from dataclasses import dataclass

INVALID, PARSE_ERROR, STORED = "invalid", "parse_error", "stored"
_MISSING = object()  # a field left out of the lead
PAYLOAD_DEPTH_MAX = 32  # README "Lead fields"; apps/intake/validation.py


@dataclass(frozen=True)
class HostileLead:
    kind: str  # the class of hostility: "nul", "surrogate", "depth", ...
    case: str  # this case, for test ids
    body: bytes  # the lead's JSON text
    answer: str  # INVALID | PARSE_ERROR | STORED
    field: str | None = None  # the field an INVALID answer names

    @property
    def test_id(self) -> str:
        return f"{self.kind}-{self.case}"


class Raw(bytes):
    """A JSON fragment written as is (what an encoder would refuse to write)."""


def encode(value) -> bytes:
    """JSON text for `value`, Raw fragments spliced in. Non-ASCII text is sent as UTF-8, except
    when it holds lone surrogates (which UTF-8 cannot carry): then as \\u escapes."""
    if isinstance(value, Raw):
        return bytes(value)
    if isinstance(value, dict):
        return (
            b"{"
            + b",".join(encode(key) + b":" + encode(item) for key, item in value.items())
            + b"}"
        )
    if isinstance(value, Pairs):
        return b"{" + b",".join(encode(key) + b":" + encode(item) for key, item in value) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(encode(item) for item in value) + b"]"
    try:
        return json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(value, ensure_ascii=True).encode()


class Pairs(list):
    """A JSON object written with its keys in order, repeats included (duplicate keys)."""


def nested(depth: int, leaf=None):
    """`depth` levels of objects and lists, alternating, around `leaf`."""
    value = "leaf" if leaf is None else leaf
    for level in range(depth - 1, -1, -1):
        value = {"k": value} if level % 2 == 0 else [value]
    return value


def nested_raw(depth: int) -> Raw:
    return Raw(b'{"k":' * depth + b"1" + b"}" * depth)


def batch_body(leads: list[bytes]) -> bytes:
    return b'{"leads":[' + b",".join(leads) + b"]}"


def hostile_leads(tag: str) -> list[HostileLead]:
    numbers = itertools.count()

    def email() -> str:
        return f"hostile-{tag}-{next(numbers)}@example.com"

    def lead(kind, case, answer, field=None, **fields):
        body = {"email": email(), **fields}
        body = {key: value for key, value in body.items() if value is not _MISSING}
        return HostileLead(kind, case, encode(body), answer, field)

    def whole(kind, case, body: bytes):
        return HostileLead(kind, case, body, PARSE_ERROR)

    def raw_lead(kind, case, answer, field, fragment: bytes):
        """A lead object with one raw member, e.g. b'"name":"\\xff"'."""
        body = b'{"email":' + encode(email()) + b"," + fragment + b"}"
        return HostileLead(kind, case, body, answer, field)

    cases = [
        # --- NUL (\u0000): PostgreSQL text and jsonb cannot hold it.
        *(
            lead("nul", field, INVALID, field, **{field: "x\x00y"})
            for field in ("name", "phone", "company", "source", "campaign_id", "region")
        ),
        lead("nul", "email", INVALID, "email", email="a\x00b@example.com"),
        lead("nul", "name-only-nul", INVALID, "name", name="\x00"),
        lead("nul", "payload-value", INVALID, "payload", payload={"note": "a\x00"}),
        lead("nul", "payload-key", INVALID, "payload", payload={"k\x00": 1}),
        lead("nul", "payload-deep", INVALID, "payload", payload=nested(12, "deep\x00")),
        lead("nul", "payload-deep-key", INVALID, "payload", payload=nested(9, {"\x00": 1})),
        lead("nul", "payload-list", INVALID, "payload", payload={"l": [1, "ok", "\x00"]}),
        lead("nul", "field-name", INVALID, "na\x00me", **{"na\x00me": "x"}),
        # Not a NUL: a backslash then "u0000", as text (the byte filter's false alarm).
        lead("nul", "escaped-backslash", STORED, name="\\u0000", payload={"t": "\\u0000"}),
        # --- Text that grows when lower-cased (pool A lower-cases e-mails; column of 254).
        lead("lowercase", "dotted-i-x130", INVALID, "email", email="\u0130" * 130 + "@x.io"),
        lead(
            "lowercase",
            "dotted-i-domain",
            INVALID,
            "email",
            email=f"a{tag}@" + ("\u0130" * 60 + ".") * 3 + "io",
        ),
        lead(
            "lowercase",
            "ascii-254",
            STORED,
            email=f"{tag[:8]:a<64}@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 61,
        ),
        lead("lowercase", "upper-ascii", STORED, email=email().upper()),
        # --- Odd Unicode in e-mails: letters that pass Django's ASCII regex only by case
        # folding, look-alikes, invisible characters.
        *(
            lead("email-unicode", name, INVALID, "email", email=f"{char}{tag}@example.com")
            for name, char in (
                ("dotted-capital-i", "\u0130"),
                ("dotless-i", "\u0131"),
                ("long-s", "\u017f"),
                ("kelvin", "\u212a"),
                ("u-umlaut", "ü"),
                ("fullwidth-a", "ａ"),
                ("bom", "\ufeff"),
                ("rtl-override", "\u202e"),
                ("control", "\x01"),
            )
        ),
        lead("email-unicode", "idn-domain", STORED, email=f"a{tag}@exämple.com"),
        lead("email-unicode", "fullwidth-domain", STORED, email=f"a{tag}@ｅxample.com"),
        # --- Odd Unicode in phones: pool A's E.164 normalization must fit 40 characters.
        *(
            lead("phone-unicode", name, STORED, phone=phone)
            for name, phone in (
                ("fullwidth-digits", "＋１ ４１５ ５５５ ０１００"),
                ("arabic-indic-digits", "+٤٤ ٢٠ ٧٩٤٦ ٠٩٥٨"),
                ("rtl-marks", "\u200f+44 20 7946 0958\u200f"),
                ("extension", "+1 415 555 0100 ext. 1234567"),
                ("forty-digits", "1" * 40),
                ("emoji", "📞 +1 415 555 0100"),
                ("letters", "+1-800-FLOWERS"),
            )
        ),
        lead("phone-unicode", "forty-one", INVALID, "phone", phone="1" * 41),
        # --- Lone surrogates and bytes that are not UTF-8 (orjson refuses the whole body;
        # the intake finds the lead and field).
        lead("surrogate", "name-high", INVALID, "name", name="a\ud800b"),
        lead("surrogate", "name-low", INVALID, "name", name="\udfff"),
        lead("surrogate", "email", INVALID, "email", email="a\ud800@example.com"),
        lead("surrogate", "payload-value", INVALID, "payload", payload={"v": ["\udc00"]}),
        lead("surrogate", "payload-key", INVALID, "payload", payload={"\ud83d": 1}),
        lead("surrogate", "unknown-field", INVALID, "\ud800", **{"\ud800": 1}),
        raw_lead("surrogate", "invalid-utf8", INVALID, "name", b'"name":"a\xffb"'),
        raw_lead("surrogate", "overlong-utf8", INVALID, "company", b'"company":"\xc0\xaf"'),
        raw_lead("surrogate", "utf8-surrogate", INVALID, "name", b'"name":"\xed\xa0\x80"'),
        lead("surrogate", "valid-pair", STORED, name="smile \U0001f600"),
        # --- Nesting: the payload holds at most PAYLOAD_DEPTH_MAX levels.
        lead("depth", "at-limit", STORED, payload=nested(PAYLOAD_DEPTH_MAX)),
        lead("depth", "over-limit", INVALID, "payload", payload=nested(PAYLOAD_DEPTH_MAX + 1)),
        lead("depth", "past-orjson-dumps", INVALID, "payload", payload=nested_raw(300)),
        lead("depth", "name-is-nested", INVALID, "name", name=nested(40)),
        whole(
            "depth", "past-any-parser", b'{"email":"a@b.co","payload":' + nested_raw(1100) + b"}"
        ),
        # --- Numbers: orjson reads integers past 64 bits as floats; JSON has no infinity.
        *(
            lead("number", name, STORED, payload={"n": number})
            for name, number in (
                ("u64-max", Raw(b"18446744073709551615")),
                ("i64-min", Raw(b"-9223372036854775808")),
                ("past-u64", Raw(b"123456789012345678901234567890")),
                ("float-max", Raw(b"1.7976931348623157e308")),
                ("denormal", Raw(b"5e-324")),
                ("underflow", Raw(b"1e-400")),
                ("negative-zero", Raw(b"-0.0")),
            )
        ),
        lead("number", "infinity", INVALID, "payload", payload={"n": Raw(b"1e400")}),
        lead("number", "minus-infinity", INVALID, "payload", payload={"n": Raw(b"-1e999")}),
        lead("number", "many-digits", INVALID, "payload", payload={"n": Raw(b"1" * 4400)}),
        lead("number", "nan-literal", INVALID, "payload", payload={"n": Raw(b"NaN")}),
        lead("number", "infinity-literal", INVALID, "payload", payload={"n": Raw(b"Infinity")}),
        lead("number", "name-infinity", INVALID, "name", name=Raw(b"1e400")),
        lead("number", "name-huge-int", STORED, name=Raw(b"123456789012345678901234567890")),
        lead("number", "name-float", STORED, name=1.5),
        # --- Strings at and past the limits.
        lead("size", "name-200", STORED, name="n" * 200),
        lead("size", "name-201", INVALID, "name", name="n" * 201),
        lead("size", "name-200-emoji", STORED, name="\U0001f600" * 200),
        lead("size", "name-201-emoji", INVALID, "name", name="\U0001f600" * 201),
        lead("size", "name-combining", STORED, name="e\u0301" * 100),
        lead("size", "name-padded", STORED, name=" " * 5000 + "n" * 200 + "\u3000" * 100),
        lead("size", "company-201", INVALID, "company", company="c" * 201),
        lead("size", "source-101", INVALID, "source", source="s" * 101),
        lead("size", "campaign-101", INVALID, "campaign_id", campaign_id="c" * 101),
        lead("size", "region-51", INVALID, "region", region="r" * 51),
        lead("size", "email-255", INVALID, "email", email="a" * 243 + "@example.com"),
        lead("size", "payload-over", INVALID, "payload", payload={"x": "x" * 16400}),
        lead("size", "priority-long", INVALID, "priority", priority="p" * 10_000),
        # --- Control characters, BOMs.
        lead("control", "name-c0", STORED, name="\x01\x1b[31mred\x7f\x85"),
        lead("control", "name-tabs-lines", STORED, name="a\tb\nc\rd\\e"),
        lead("control", "payload-c0", STORED, payload={"\x1f": "\x07\x0b\x0c"}),
        whole("control", "raw-control-char", b'{"email":"a@b.co","name":"a\x01b"}'),
        lead("control", "name-bom", STORED, name="\ufeffAda"),
        whole("control", "body-bom", b'\xef\xbb\xbf{"email":"a@b.co"}'),
        lead("control", "line-separators", STORED, company="a\u2028b\u2029c"),
        # --- Wrong types.
        *(
            lead("type", f"name-{name}", INVALID, "name", name=value)
            for name, value in (("list", []), ("object", {}), ("true", True), ("null", None))
        ),
        lead("type", "email-number", INVALID, "email", email=42),
        lead("type", "email-null", INVALID, "email", email=None),
        lead("type", "email-missing", INVALID, "email", email=_MISSING, name="x"),
        lead("type", "priority-number", INVALID, "priority", priority=1),
        lead("type", "priority-upper", INVALID, "priority", priority="CRITICAL"),
        lead("type", "priority-list", INVALID, "priority", priority=["critical"]),
        lead("type", "payload-list", INVALID, "payload", payload=[1]),
        lead("type", "payload-string", INVALID, "payload", payload="{}"),
        HostileLead("type", "lead-list", b"[]", INVALID, "non_field_errors"),
        HostileLead("type", "lead-string", b'"lead"', INVALID, "non_field_errors"),
        HostileLead("type", "lead-null", b"null", INVALID, "non_field_errors"),
        lead("type", "unknown-field", INVALID, "emial", emial="x"),
        # --- Duplicate keys: the last one wins, as in JavaScript's and Python's JSON.
        HostileLead(
            "duplicate-key",
            "name-twice",
            encode(Pairs([("email", email()), ("name", "first"), ("name", "second")])),
            STORED,
        ),
        HostileLead(
            "duplicate-key",
            "bad-email-last",
            encode(Pairs([("email", email()), ("email", "not-an-email")])),
            INVALID,
            "email",
        ),
    ]
    return cases
