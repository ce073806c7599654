"""What a worker checks when it starts, before it takes a task.

Every worker: the timing invariants between settings (leadflow/checks.py). Celery's Django
fixup runs Django's system checks but ignores their errors, so they are run again here.

Pool A scores every lead with config/scoring.yaml. A worker that consumes pool A's queues reads
and validates the rules here, in its main process, before the pool forks its children: broken
rules stop it at once with the error naming the rule (in `make run`'s output, in a pod's log and
restarts), rather than a worker that looks healthy while every batch fails and its backlog piles
up in flight. Its children inherit the rules exactly as checked. Pools B and C do not score and
do not check.
"""

from celery import signals


@signals.worker_init.connect
def _timing_check(**kwargs) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from leadflow.checks import timing_checks_run

    try:
        timing_checks_run("worker")
    except ImproperlyConfigured as error:
        # As below: SystemExit, printed to stderr, as logging is not set up yet.
        raise SystemExit(str(error)) from None


@signals.worker_init.connect
def _scoring_rules_check(sender=None, **kwargs) -> None:
    queues = list(sender.app.amqp.queues.consume_from or sender.app.amqp.queues)
    if not any(name.startswith("a.") for name in queues):
        return
    from django.conf import settings

    from apps.leads.scoring import ScoringConfigError, scoring_preload

    try:
        scoring = scoring_preload()
    except ScoringConfigError as error:
        # SystemExit, not an exception Celery's signal would log and carry on after; logging
        # is not set up yet at worker_init, so the message goes to stderr with the exit.
        raise SystemExit(f"pool A not started: broken scoring rules: {error}") from None
    # Printed like the worker's banner, which also comes before its logging is set up.
    print(
        f"pool A: {len(scoring.rules)} scoring rules checked, from {settings.SCORING_CONFIG_PATH}",
        flush=True,
    )
