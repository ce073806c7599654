"""The control process. On the main thread, using Redis (and the broker) only: the dispatcher's
loop and, once a second, the controller's tick followed by the in-flight batches to publish
again. On a database thread (apps/control/database_work.py): the policy, the audit, the reports
that are due, backfill from the deferred ledger in NORMAL mode, and every 10 s a sweep for
stalled leads. On a thread of its own: the leader lease's renewals.

Everything that publishes follows the last tick's shedding: a paused tier's queues receive
nothing (the in-flight republisher, the sweeper and the reports hold its work), and its queues
do not count against the others' watermark.

No dependency error stops it (apps/control/outages.py): a step whose Redis, broker or
PostgreSQL fails is skipped for a short back-off while the others go on, the outage is logged
once, and the step resumes by itself when the dependency answers. Without PostgreSQL the
dispatcher still moves leads and the controller runs on the last policy read.

Only one instance is active at a time (apps/control/leadership.py: a lease renewed apart from
the loop's work, and fencing), so running replicas is safe: the others stand by and take over
within seconds if the active one dies, freezes or loses Redis.
"""

import logging
import signal
import time

from django.core.management.base import BaseCommand, CommandError

from apps.control.controller import Controller
from apps.control.database_work import DatabaseWork, PolicyCache
from apps.control.dispatcher import Dispatcher
from apps.control.leadership import Leadership, LeadershipLost
from apps.control.outages import REDIS, Step, broker_name, outages
from apps.inbox import FenceRefused
from apps.status import metrics as control_metrics
from leadflow.redis_checks import RedisNotDurable, redis_checks_run

log = logging.getLogger(__name__)

ACQUIRE_WAIT_SECONDS = 1.0  # a standby's bid; it polls the lease every 0.1 s meanwhile
TICK_SECONDS = 1.0
IDLE_SLEEP_SECONDS = 0.02
# The first tick publishes the policy's overrides (LOW paused...): it waits this long for the
# first read, then goes on with the last policy known (PostgreSQL may be away).
POLICY_WAIT_SECONDS = 2.0
LEADER_STEPS = {"tick", "republish", "dispatch"} | DatabaseWork.STEPS


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
        leadership = Leadership()
        policies = PolicyCache()
        bid = Step("lease", {REDIS})
        control_metrics.serve()  # LEADFLOW_CONTROL_METRICS_PORT; figures only while leading
        self._say("control: waiting to become the active instance")
        while not self._stopping and not self._expired(deadline):
            lease = bid.run(leadership.acquire, ACQUIRE_WAIT_SECONDS)
            if lease is None:
                if bid.backing_off:  # Redis is away: the bid is tried again shortly
                    time.sleep(0.1)
                continue
            self._say(f"control: active (lease {lease.token[:8].decode()})")
            try:
                self._lead(lease, deadline, policies)
            except (LeadershipLost, FenceRefused) as lost:
                self._say(f"control: no longer the active instance ({lost}); standing by")
                self._say("control: waiting to become the active instance")
            finally:
                control_metrics.leader_set(None)
                lease.release()
                outages.forget(LEADER_STEPS)
        self._say("control: stopped")

    def _lead(self, lease, deadline: float | None, policies: PolicyCache) -> None:
        database = DatabaseWork(lease, policies)
        controller = Controller(lease=lease, audit=database.audit)
        dispatcher = Dispatcher(fence=lease.fence)
        uses_queues = {REDIS, broker_name()}
        tick = Step("tick", uses_queues)
        republish = Step("republish", uses_queues)
        dispatch = Step("dispatch", uses_queues)
        database.start()
        control_metrics.leader_set(controller)
        try:
            database.policy_read.wait(POLICY_WAIT_SECONDS)
            paused: frozenset[str] = frozenset()
            next_tick = 0.0
            while not self._stopping and not self._expired(deadline):
                lease.check()
                lease.progress()
                if database.failure is not None:
                    raise RuntimeError("control: the database thread failed") from database.failure
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + TICK_SECONDS
                    tick.run(controller.tick, dispatcher.dispatched, policies.current())
                    if controller.shedding is not None:  # the last tick's, if this one failed
                        database.shedding = controller.shedding
                        paused = controller.shedding.paused_tiers
                        republish.run(dispatcher.republish_stale, paused)
                # Nothing is dispatched before a tick has said which tiers are paused.
                sent = dispatch.run(dispatcher.dispatch_once, paused) if database.shedding else 0
                if not sent:
                    time.sleep(IDLE_SLEEP_SECONDS)
        finally:
            database.stop()

    def _say(self, line: str) -> None:
        self.stdout.write(line, ending="\n")
        self.stdout.flush()

    def _stop(self, signum, frame) -> None:
        self._stopping = True

    @staticmethod
    def _expired(deadline: float | None) -> bool:
        return deadline is not None and time.monotonic() >= deadline
