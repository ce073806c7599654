"""Scoring rules from config/scoring.yaml, validated with errors that name the rule.

Pool A's worker reads and checks them once, in its main process, when it starts
(workers/checks.py): broken rules stop it there, with the error, instead of a worker that looks
healthy while every batch fails. The children it forks (at start, and whenever one is recycled)
inherit exactly the rules it checked, so an edit of the file applies at the next restart, never
to some children and not others. A process that did not preload (a shell, a test) reads the
file at its first use.
"""

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from django.conf import settings

FIELDS = frozenset(
    ["email", "email_domain", "name", "phone", "company", "source", "campaign_id", "region", "tier"]
)
CONDITIONS = ("present", "equals", "in", "not_in", "matches")


class ScoringConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Rule:
    name: str
    field: str
    condition: str
    operand: object
    points: int

    def holds(self, lead: dict) -> bool:
        return self.test(str(lead.get(self.field) or "").strip())

    @functools.cached_property
    def test(self):
        """The rule as a function of the field's value, stripped: bool."""
        operand = self.operand
        if self.condition == "present":
            return (lambda value: bool(value)) if operand else (lambda value: not value)
        # An empty field matches no other condition (not even not_in).
        if self.condition == "equals":
            return lambda value: bool(value) and value.lower() == operand
        if self.condition == "in":
            return lambda value: bool(value) and value.lower() in operand
        if self.condition == "not_in":
            return lambda value: bool(value) and value.lower() not in operand
        search = operand.search  # matches
        return lambda value: bool(value) and search(value) is not None


# Compared by identity: a Scoring builds each distinct verdict once, and pool A keys its
# per-batch text by verdict.
@dataclass(frozen=True, slots=True, eq=False)
class Verdict:
    score: int  # 0..100
    qualified: bool
    reasons: tuple[str, ...]  # names of the rules that added points, in the file's order


@dataclass(frozen=True)
class Scoring:
    base: int
    threshold: int
    rules: tuple[Rule, ...]

    def score(self, lead: dict) -> tuple[int, bool, list[str]]:
        """(score 0..100, qualified, names of the rules that added points)."""
        verdict = self.verdict(lead)
        return verdict.score, verdict.qualified, list(verdict.reasons)

    def verdict(self, lead: dict) -> Verdict:
        """The lead's verdict (what score() says). Pool A scores every lead with this: the rules
        are compiled once, each field is read once per lead, and each distinct verdict (a set of
        rules that held) is built once, so a lead costs a few microseconds."""
        return self._compiled(lead)

    @functools.cached_property
    def _compiled(self):
        fields = tuple(dict.fromkeys(rule.field for rule in self.rules))
        tests = tuple(
            (fields.index(rule.field), 1 << n, rule.test) for n, rule in enumerate(self.rules)
        )
        verdicts: dict[int, Verdict] = {}

        def verdict_of(mask: int) -> Verdict:
            total = self.base + sum(r.points for n, r in enumerate(self.rules) if mask >> n & 1)
            total = max(0, min(100, total))
            reasons = tuple(r.name for n, r in enumerate(self.rules) if mask >> n & 1)
            return verdicts.setdefault(mask, Verdict(total, total >= self.threshold, reasons))

        def verdict(lead: dict) -> Verdict:
            values = [str(lead.get(name) or "").strip() for name in fields]
            mask = 0
            for index, bit, test in tests:
                if test(values[index]):
                    mask |= bit
            found = verdicts.get(mask)
            return found if found is not None else verdict_of(mask)

        return verdict


def _fail(path: Path, where: str, problem: str):
    raise ScoringConfigError(f"{path}: {where}: {problem}")


def _parse_rule(path: Path, index: int, raw: object) -> Rule:
    where = f"rules[{index}]"
    if not isinstance(raw, dict):
        _fail(path, where, "must be a mapping with name, field, a condition and points")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        _fail(path, where, "needs a 'name'")
    where = f"rules[{index}] ({name})"
    field = raw.get("field")
    if field not in FIELDS:
        _fail(path, where, f"'field' must be one of {sorted(FIELDS)}, got {field!r}")
    points = raw.get("points")
    if not isinstance(points, int) or isinstance(points, bool):
        _fail(path, where, f"'points' must be an integer, got {points!r}")
    given = [c for c in CONDITIONS if c in raw]
    if len(given) != 1:
        _fail(path, where, f"needs exactly one condition of {list(CONDITIONS)}, got {given}")
    unknown = set(raw) - {"name", "field", "points", *CONDITIONS}
    if unknown:
        _fail(path, where, f"unknown keys {sorted(unknown)}")
    condition = given[0]
    operand = raw[condition]
    if condition == "present":
        if not isinstance(operand, bool):
            _fail(path, where, "'present' must be true or false")
    elif condition == "equals":
        if not isinstance(operand, str | int):
            _fail(path, where, "'equals' must be a string")
        operand = str(operand).lower()
    elif condition in ("in", "not_in"):
        if not isinstance(operand, list) or not all(isinstance(v, str | int) for v in operand):
            _fail(path, where, f"'{condition}' must be a list of strings")
        operand = frozenset(str(v).lower() for v in operand)
    else:
        try:
            operand = re.compile(str(operand), re.IGNORECASE)
        except re.error as exc:
            _fail(path, where, f"'matches' is not a valid regular expression: {exc}")
    return Rule(name=name, field=field, condition=condition, operand=operand, points=points)


def scoring_load(path: Path) -> Scoring:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ScoringConfigError(f"{path}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ScoringConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        _fail(path, "top level", "must be a mapping with version, base, threshold, rules")
    if raw.get("version") != 1:
        _fail(path, "version", f"must be 1, got {raw.get('version')!r}")
    for key in ("base", "threshold"):
        value = raw.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100:
            _fail(path, key, f"must be an integer from 0 to 100, got {value!r}")
    rules = raw.get("rules")
    if not isinstance(rules, list) or not rules:
        _fail(path, "rules", "must be a non-empty list")
    unknown = set(raw) - {"version", "base", "threshold", "rules"}
    if unknown:
        _fail(path, "top level", f"unknown keys {sorted(unknown)}")
    return Scoring(
        base=raw["base"],
        threshold=raw["threshold"],
        rules=tuple(_parse_rule(path, i, r) for i, r in enumerate(rules)),
    )


_loaded: Scoring | None = None


def scoring_preload() -> Scoring:
    """Read and check LEADFLOW_SCORING_CONFIG now, and make its rules the ones this process
    (and the children it forks from now on) scores with. Raises ScoringConfigError naming the
    rule at fault."""
    global _loaded
    _loaded = scoring_load(Path(settings.SCORING_CONFIG_PATH))
    return _loaded


def scoring_current() -> Scoring:
    """The rules in use: those preloaded when the worker started, else read now."""
    return _loaded if _loaded is not None else scoring_preload()
