"""The mode machine and what each mode sheds. Pure logic: the controller feeds it measures.

Two axes, each with hysteresis and a dwell time:
- load, from the normal tier's lag: NORMAL → THIN (lag > 30 s, back under 10 s) → SEVERE
  (lag > 5 min, back under 2 min);
- emergency, from the critical tier's lag (> 60 s, back under 20 s). While it lasts, one more
  feature is shed per dwell period, in the order of FEATURE_SHED_ORDER.
The mode shown is EMERGENCY while the second axis is on, else the load axis's mode; what is
shed is the union of both.
"""

import hashlib
from dataclasses import asdict, dataclass

from django.conf import settings

from apps.control.models import Mode

# Qualification is never shed. The rest, in the order an emergency sheds them.
FEATURE_SHED_ORDER = ("crm_throttle", "enrichment", "reports", "analytics")


@dataclass(frozen=True, slots=True)
class Shedding:
    """What runs right now. Published by the controller; read by the dispatcher and pools."""

    mode: str = Mode.NORMAL
    low_paused: bool = False
    enrichment: str = "on"  # "on", "critical_only" or "off"
    reports: bool = True
    analytics: bool = True
    crm_throttled: bool = False
    sampling_percent: int = 100  # share of non-critical leads that go on past qualification
    stop_scaling: bool = False

    @property
    def paused_tiers(self) -> frozenset[str]:
        """The tiers whose queues receive nothing now (their consumers are cancelled)."""
        return frozenset({"low"}) if self.low_paused else frozenset()

    def enrichment_runs(self, tier: str) -> bool:
        return self.enrichment == "on" or (
            self.enrichment == "critical_only" and tier == "critical"
        )

    def goes_on(self, tier: str, trace_id: str) -> bool:
        """Whether a lead goes on past qualification (SEVERE samples non-critical leads).

        Decided by the trace id, so a redelivered batch decides the same way."""
        if tier == "critical" or self.sampling_percent >= 100:
            return True
        bucket = int(hashlib.sha256(trace_id.encode()).hexdigest()[:8], 16) % 100
        return bucket < self.sampling_percent

    def as_redis(self) -> dict[str, str]:
        return {key: str(value) for key, value in asdict(self).items()}

    @classmethod
    def from_redis(cls, raw: dict[bytes, bytes]) -> "Shedding":
        if not raw:
            return cls()
        values = {key.decode(): value.decode() for key, value in raw.items()}
        return cls(
            mode=values["mode"],
            low_paused=values["low_paused"] == "True",
            enrichment=values["enrichment"],
            reports=values["reports"] == "True",
            analytics=values["analytics"] == "True",
            crm_throttled=values["crm_throttled"] == "True",
            sampling_percent=int(values["sampling_percent"]),
            stop_scaling=values["stop_scaling"] == "True",
        )


def shedding_for(load_mode: str, emergency_level: int, policy, sampling_default: int) -> Shedding:
    """What runs, given the load axis's mode, how many features an emergency has shed
    (0 = no emergency) and the operators' policy (whose switches only ever shed more)."""
    if policy.forced_mode:
        load_mode = policy.forced_mode if policy.forced_mode != Mode.EMERGENCY else Mode.SEVERE
        emergency_level = len(FEATURE_SHED_ORDER) if policy.forced_mode == Mode.EMERGENCY else 0
    shed = set(FEATURE_SHED_ORDER[:emergency_level])
    thin = load_mode in (Mode.THIN, Mode.SEVERE)
    if policy.pause_enrichment or "enrichment" in shed:
        enrichment = "off"
    else:
        enrichment = "critical_only" if thin else "on"
    sampling = 100
    if load_mode == Mode.SEVERE:
        sampling = (
            policy.sampling_percent if policy.sampling_percent is not None else sampling_default
        )
    return Shedding(
        mode=Mode.EMERGENCY if emergency_level else load_mode,
        low_paused=thin or bool(emergency_level) or policy.pause_low,
        enrichment=enrichment,
        reports=not (thin or "reports" in shed or policy.reports_off),
        analytics=not (thin or "analytics" in shed or policy.analytics_off),
        crm_throttled="crm_throttle" in shed or policy.throttle_crm,
        sampling_percent=sampling,
        stop_scaling=policy.stop_scaling,
    )


@dataclass(frozen=True, slots=True)
class Change:
    kind: str  # "transition" or "shed"
    from_mode: str
    to_mode: str
    reason: str


class _Axis:
    """One condition with a dwell time: `value` changes only after `wanted` held that long."""

    def __init__(self, value) -> None:
        self.value = value
        self._wanted = value
        self._since = 0.0

    def observe(self, wanted, now: float, dwell: float) -> bool:
        if wanted == self.value:
            self._wanted = wanted
            return False
        if wanted != self._wanted:
            self._wanted, self._since = wanted, now
        if now - self._since >= dwell:
            self.value = wanted
            return True
        return False


class ModeMachine:
    def __init__(self, load_mode: str = Mode.NORMAL, emergency_level: int = 0) -> None:
        self._load = _Axis(load_mode)
        self._emergency = _Axis(emergency_level > 0)
        self.emergency_level = emergency_level
        self._level_since = 0.0

    @property
    def load_mode(self) -> str:
        return self._load.value

    @property
    def mode(self) -> str:
        return Mode.EMERGENCY if self.emergency_level else self._load.value

    def observe(self, now: float, normal_lag: float, critical_lag: float) -> list[Change]:
        """Feed one tick's lags; returns the changes that happened (usually none)."""
        # Long on purpose: both axes' transitions of one tick, in the order README Overload gives.
        s = settings
        dwell = s.MODE_DWELL_SECONDS
        before = self.mode
        changes = []

        current = self._load.value
        if normal_lag > s.MODE_SEVERE_ENTER_LAG or (
            current == Mode.SEVERE and normal_lag >= s.MODE_SEVERE_EXIT_LAG
        ):
            wanted = Mode.SEVERE
        elif normal_lag > s.MODE_THIN_ENTER_LAG or (
            current in (Mode.THIN, Mode.SEVERE) and normal_lag >= s.MODE_THIN_EXIT_LAG
        ):
            wanted = Mode.THIN
        else:
            wanted = Mode.NORMAL
        load_changed = self._load.observe(wanted, now, dwell)

        critical_high = critical_lag > s.MODE_EMERGENCY_ENTER_LAG
        in_emergency = critical_high or (
            self._emergency.value and critical_lag >= s.MODE_EMERGENCY_EXIT_LAG
        )
        if self._emergency.observe(in_emergency, now, dwell):
            self.emergency_level = 1 if in_emergency else 0
            self._level_since = now
        elif (
            self.emergency_level
            and critical_high
            and self.emergency_level < len(FEATURE_SHED_ORDER)
            and now - self._level_since >= dwell
        ):
            self.emergency_level += 1
            self._level_since = now
            feature = FEATURE_SHED_ORDER[self.emergency_level - 1]
            changes.append(
                Change(
                    "shed",
                    self.mode,
                    self.mode,
                    f"critical lag {critical_lag:.1f} s still over "
                    f"{s.MODE_EMERGENCY_ENTER_LAG:g} s after {dwell:g} s: shed {feature}",
                )
            )

        if self.mode != before:
            reason = (
                f"critical lag {critical_lag:.1f} s, normal lag {normal_lag:.1f} s "
                f"(held {dwell:g} s)"
            )
            if self.mode == Mode.EMERGENCY:
                reason += f"; shed {FEATURE_SHED_ORDER[0]}"
            changes.insert(0, Change("transition", before, self.mode, reason))
        elif load_changed:
            # The load axis moved under an emergency: not a visible transition, still audited.
            changes.insert(
                0,
                Change(
                    "transition",
                    before,
                    before,
                    f"under emergency, load mode now {self._load.value} "
                    f"(normal lag {normal_lag:.1f} s)",
                ),
            )
        return changes
