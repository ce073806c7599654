"""Scoring rules: the compiled verdict gives what the rules say, rule by rule."""

import itertools
from pathlib import Path

import pytest

from apps.leads.scoring import ScoringConfigError, scoring_current, scoring_load


def _score_by_the_rules(scoring, lead: dict) -> tuple[int, bool, list[str]]:
    """The rules read one at a time (Rule.holds), as the config file describes them."""
    total, reasons = scoring.base, []
    for rule in scoring.rules:
        if rule.holds(lead):
            total += rule.points
            reasons.append(rule.name)
    total = max(0, min(100, total))
    return total, total >= scoring.threshold, reasons


def test_verdict_matches_the_rules_one_by_one_on_every_combination():
    scoring = scoring_current()
    values = {
        "email": ["ada@analytical.io", "test@analytical.io", "NoReply+x@gmail.com", ""],
        "email_domain": ["analytical.io", "gmail.com", " GMAIL.com ", ""],
        "phone": ["+442079460958", "", "  "],
        "company": ["Analytical Engines", ""],
        "source": ["google_ads", "Partner ", "newsletter", ""],
        "campaign_id": ["spring", ""],
        "region": ["gb", "US", "jp", ""],
        "tier": ["critical", "normal", "low"],
    }
    names = list(values)
    for combination in itertools.product(*values.values()):
        lead = dict(zip(names, combination, strict=True))
        verdict = scoring.verdict(lead)
        assert (verdict.score, verdict.qualified, list(verdict.reasons)) == _score_by_the_rules(
            scoring, lead
        ), lead
        assert scoring.score(lead) == _score_by_the_rules(scoring, lead)


def test_score_is_clamped_and_qualifies_at_the_threshold(tmp_path: Path):
    path = tmp_path / "scoring.yaml"
    path.write_text(
        "version: 1\nbase: 90\nthreshold: 95\nrules:\n"
        "  - {name: big, field: company, present: true, points: 30}\n"
        "  - {name: no phone, field: phone, present: false, points: -100}\n"
        "  - {name: vip, field: source, equals: VIP, points: 5}\n"
        "  - {name: not from, field: region, not_in: [fr], points: 1}\n"
    )
    scoring = scoring_load(path)
    assert scoring.score({"company": "x", "phone": "1"}) == (100, True, ["big"])
    assert scoring.score({"phone": ""}) == (0, False, ["no phone"])
    assert scoring.score({"phone": "1", "source": " vip "}) == (95, True, ["vip"])
    # not_in never matches an empty field
    assert scoring.score({"phone": "1", "region": "de"}) == (91, False, ["not from"])


def test_config_error_says_which_rule(tmp_path: Path):
    path = tmp_path / "scoring.yaml"
    path.write_text(
        "version: 1\nbase: 0\nthreshold: 50\nrules:\n"
        "  - {name: bad, field: company, matches: '(', points: 5}\n"
    )
    with pytest.raises(ScoringConfigError, match=r"rules\[0\] \(bad\).*regular expression"):
        scoring_load(path)
