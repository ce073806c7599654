"""The control process: the dispatcher loop; once a second the controller's tick, then the
in-flight batches to publish again, the reports that are due and, in NORMAL mode, a pass of
backfill from the deferred ledger; every 10 s a sweep for stalled leads.

Everything that publishes runs after a tick and follows its shedding: a paused tier's queues
receive nothing (the in-flight republisher, the sweeper and the reports hold its work), and
its queues do not count against the others' watermark.

Only one instance is active at a time (a Redis lock with expiry), so running replicas is
safe: the others wait and take over within seconds if the active one dies.
"""

import contextlib
import logging
import signal
import time

from django.core.management.base import BaseCommand, CommandError
from redis.exceptions import LockError

from apps.control import metrics as control_metrics
from apps.control.backfill import deferred_backfill, report_sender
from apps.control.controller import Controller
from apps.control.dispatcher import Dispatcher, pools_have_room
from apps.control.models import Mode
from apps.control.sweeper import stalled_leads_resend
from apps.reports.services import reports_schedule
from leadflow.redis_checks import RedisNotDurable, redis_checks_run
from leadflow.redis_conn import get_redis

log = logging.getLogger(__name__)

LEADER_LOCK = "lf:control:leader"
LEADER_LOCK_SECONDS = 5.0
TICK_SECONDS = 1.0
SWEEP_SECONDS = 10.0
IDLE_SLEEP_SECONDS = 0.02


class Command(BaseCommand):
    help = "Run the dispatcher and the controller (one active instance at a time)."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--max-seconds",
            type=float,
            default=0,
            help="Stop after this long (0 = run until SIGTERM/SIGINT). For tests and benchmarks.",
        )

    def handle(self, *args, max_seconds: float, **options) -> None:
        try:
            redis_checks_run("control")
        except RedisNotDurable as refused:
            raise CommandError(str(refused)) from None
        self._stopping = False
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        deadline = time.monotonic() + max_seconds if max_seconds else None
        lock = get_redis().lock(LEADER_LOCK, timeout=LEADER_LOCK_SECONDS)
        control_metrics.serve()  # LEADFLOW_CONTROL_METRICS_PORT; figures only while leading
        self.stdout.write("control: waiting to become the active instance", ending="\n")
        while not self._stopping and not self._expired(deadline):
            if lock.acquire(blocking=True, blocking_timeout=1.0):
                self.stdout.write("control: active", ending="\n")
                try:
                    self._lead(lock, deadline)
                finally:
                    control_metrics.leader_set(None)
                    with contextlib.suppress(LockError):
                        lock.release()
        self.stdout.write("control: stopped", ending="\n")

    def _lead(self, lock, deadline: float | None) -> None:
        dispatcher, controller = Dispatcher(), Controller()
        control_metrics.leader_set(controller)
        paused: frozenset[str] = frozenset()
        next_tick = next_sweep = 0.0
        while not self._stopping and not self._expired(deadline):
            now = time.monotonic()
            if now >= next_tick:
                try:
                    lock.reacquire()
                except LockError:
                    log.warning("control: lost the leader lock")
                    return
                controller.tick(dispatcher.dispatched)
                shedding = controller.shedding
                paused = shedding.paused_tiers
                dispatcher.republish_stale(paused)
                reports_schedule(shedding, report_sender(shedding))
                if shedding.mode == Mode.NORMAL and not paused and pools_have_room():
                    deferred_backfill()
                next_tick = now + TICK_SECONDS
            if now >= next_sweep:  # after the first tick: it says which tiers are paused
                resent = stalled_leads_resend(paused)
                if resent:
                    log.warning("control: sent %d stalled leads on again", resent)
                next_sweep = now + SWEEP_SECONDS
            if not dispatcher.dispatch_once(paused):
                time.sleep(IDLE_SLEEP_SECONDS)

    def _stop(self, signum, frame) -> None:
        self._stopping = True

    @staticmethod
    def _expired(deadline: float | None) -> bool:
        return deadline is not None and time.monotonic() >= deadline
