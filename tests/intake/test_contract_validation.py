"""The hot path's validation (apps/intake/validation.py) gives the contract's verdict
(apps/intake/contract.py LeadRequest) on generated leads: the same errors, word for word, or
the same fields. In process and fast, so Hypothesis can try many more leads than the HTTP
differential test (tests/intake/test_contract_differential.py) sends.

The leads are read from JSON text as the intake reads them (json_body.body_decode), so the hot
path's `deep` shortcut is exercised as it is in production: text with NUL, lone surrogates,
letters that grow when lower-cased, numbers past a double, payloads nested past the limit.
"""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.intake.contract import LeadRequest
from apps.intake.json_body import body_decode
from apps.intake.validation import TEXT_FIELDS, lead_validate
from leadflow.queues import TIERS

INFINITY = "\u2063infinity\u2063"  # written into the JSON text as 1e400

characters = st.characters(exclude_categories=[]) | st.sampled_from(
    ["\x00", "\u0130", "\u212a", "\ud800", "\udfff", " ", "\u3000", "@", ".", "a", "\\"]
)
texts = st.text(characters, max_size=12) | st.sampled_from(
    ["", " ", "a@b.co", "critical", "normal", "low", "x" * 201, "\u0130" * 130 + "@x.io"]
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.just(INFINITY)
    | texts
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
    max_leaves=12,
)
deep_payloads = st.integers(min_value=30, max_value=40).map(
    lambda depth: json.loads('{"k":' * (depth - 1) + "1" + "}" * (depth - 1))
)
emails = (
    st.emails()
    | st.builds("{}@{}".format, texts, texts)
    | st.builds("{}{}@example.com".format, st.sampled_from(["\u0130", "\u017f", "ü", ""]), texts)
)
optional = {
    **{name: texts | values for name in TEXT_FIELDS},
    "priority": st.sampled_from(TIERS) | values,
    "payload": st.dictionaries(texts, values, max_size=4) | deep_payloads | values,
    "emial": values,
    "\ud800": values,
}
leads = st.fixed_dictionaries({}, optional={"email": emails | values, **optional}) | values


def as_sent(lead) -> bytes:
    """The lead's JSON text, as a client would send it (lone surrogates as \\u escapes)."""
    return json.dumps(lead).replace(json.dumps(INFINITY), "1e400").encode()


def contract_verdict(raw) -> tuple[dict | None, dict | None]:
    serializer = LeadRequest(data=raw)
    if serializer.is_valid():
        return dict(serializer.validated_data), None
    errors = {
        field: [str(reason) for reason in reasons] for field, reasons in serializer.errors.items()
    }
    return None, errors


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(lead=leads)
def test_the_hot_paths_validation_gives_the_contracts_verdict(lead):
    raw, deep = body_decode(as_sent(lead))
    assert lead_validate(raw, deep) == contract_verdict(raw)


def test_a_priority_nested_past_pythons_recursion_limit_is_named_not_echoed():
    body = b'{"email": "a@b.co", "priority": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    raw, deep = body_decode(body)
    expected = {"priority": ["a JSON array is not a valid choice."]}
    assert lead_validate(raw, deep) == (None, expected)
    assert contract_verdict(raw) == (None, expected)
