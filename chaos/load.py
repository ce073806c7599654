"""Steady load from the tenants: unique leads, single and batch posts, on a fixed schedule.

A scheduler thread offers requests at the configured rate to a pool of sender threads; when
every sender is busy (the API hangs) a request is counted as missed rather than sent late in a
burst. Every answer is kept as an `Answer`; every accepted trace id goes to the tracker.
"""

import itertools
import os
import queue
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass

import httpx

SENDERS = 48


@dataclass(frozen=True)
class Tenant:
    name: str
    key: str
    crm_path: str | None  # the webhook double's path, for the tenant with a CRM double


@dataclass(frozen=True, slots=True)
class Answer:
    experiment: str
    sent_at: float  # monotonic
    seconds: float
    status: int  # 0: no answer (timeout, reset, refused)
    leads: int
    accepted: int
    tenant: str
    error: str
    retry_after: bool


class LeadFactory:
    """Unique leads: a run nonce and a counter in every e-mail, so dedup never sees a repeat.
    About one in five scores under the threshold (no enrichment), 5 % critical, 5 % low."""

    def __init__(self, seed: int = 11) -> None:
        self.nonce = os.urandom(4).hex()
        self.counter = itertools.count(1)
        self.random = random.Random(seed)
        self.lock = threading.Lock()

    def lead(self) -> dict:
        with self.lock:
            n = next(self.counter)
            draw = self.random.random()
            qualified = self.random.random() >= 0.2
        tier = "critical" if draw < 0.05 else "low" if draw < 0.10 else "normal"
        if qualified:
            return {
                "email": f"chaos.{self.nonce}.{n}@acme-{n % 97}.example.com",
                "name": f"Grace Hopper {n}",
                "company": "Compilers Inc",
                "phone": "+44 20 7946 0958",
                "source": "google_ads",
                "campaign_id": "chaos",
                "region": "gb",
                "priority": tier,
                "payload": {"utm_source": "chaos", "n": n},
            }
        return {
            "email": f"chaos.{self.nonce}.{n}@gmail.com",
            "name": f"Ada {n}",
            "company": "Home",
            "source": "newsletter",
            "region": "br",
            "priority": tier,
        }


class Load:
    def __init__(self, api_url: str, tenants: list[Tenant], config, on_accepted) -> None:
        self.api_url = api_url
        self.tenants = tenants
        self.config = config
        self.on_accepted = on_accepted  # (experiment, tenant, [trace ids], monotonic time)
        self.factory = LeadFactory()
        self.answers: list[Answer] = []
        # Requests the schedule offered, and those no sender was free for, by experiment.
        self.offered: Counter = Counter()
        self.missed: Counter = Counter()
        self.experiment: str | None = None  # None: no load
        self._jobs: queue.Queue = queue.Queue(maxsize=SENDERS)
        self._closing = threading.Event()
        self._threads = [threading.Thread(target=self._schedule, name="load", daemon=True)]
        self._threads += [
            threading.Thread(target=self._send_loop, name=f"sender-{i}", daemon=True)
            for i in range(SENDERS)
        ]
        for thread in self._threads:
            thread.start()

    def run_for(self, experiment: str | None) -> None:
        """Load on, counted for `experiment`; None turns it off."""
        self.experiment = experiment

    def close(self) -> None:
        self.experiment = None
        self._closing.set()

    def _schedule(self) -> None:
        config = self.config
        singles_per_second = config.rate * config.single_share
        batches_per_second = config.rate * (1 - config.single_share) / config.batch_size
        # Each kind takes the tenants in turn on its own: one shared turn would give every batch
        # to the same tenant whenever the singles between two batches are a multiple of three.
        single_tenants = itertools.cycle(range(len(self.tenants)))
        batch_tenants = itertools.cycle(range(len(self.tenants)))
        next_single = next_batch = time.monotonic()
        while not self._closing.is_set():
            now = time.monotonic()
            experiment = self.experiment
            if experiment is None:
                next_single = next_batch = now
                time.sleep(0.05)
                continue
            if now >= next_single:
                self._offer(experiment, next(single_tenants), 0)
                next_single += 1 / singles_per_second
            if now >= next_batch:
                self._offer(experiment, next(batch_tenants), config.batch_size)
                next_batch += 1 / batches_per_second
            time.sleep(max(min(next_single, next_batch) - time.monotonic(), 0))

    def _offer(self, experiment: str, tenant_index: int, batch: int) -> None:
        self.offered[experiment] += 1
        try:
            self._jobs.put_nowait((experiment, self.tenants[tenant_index], batch))
        except queue.Full:
            self.missed[experiment] += 1

    def _send_loop(self) -> None:
        timeout = httpx.Timeout(self.config.request_timeout, connect=2.0)
        with httpx.Client(base_url=self.api_url, timeout=timeout) as client:
            while not self._closing.is_set():
                try:
                    job = self._jobs.get(timeout=0.5)
                except queue.Empty:
                    continue
                self.answers.append(self._send(client, *job))

    def _send(self, client: httpx.Client, experiment: str, tenant: Tenant, batch: int):
        headers = {"Authorization": f"Bearer {tenant.key}"}
        if batch:
            path, leads = "/api/v1/leads/batch", batch
            body = {"leads": [self.factory.lead() for _ in range(batch)]}
        else:
            path, body, leads = "/api/v1/leads", self.factory.lead(), 1
        started = time.monotonic()
        try:
            response = client.post(path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            seconds = time.monotonic() - started
            return Answer(
                experiment, started, seconds, 0, leads, 0, tenant.name, type(exc).__name__, False
            )
        seconds = time.monotonic() - started
        trace_ids = _accepted_trace_ids(response, batch) if response.status_code == 202 else []
        if trace_ids:
            self.on_accepted(experiment, tenant.name, trace_ids, started + seconds)
        return Answer(
            experiment,
            started,
            seconds,
            response.status_code,
            leads,
            len(trace_ids),
            tenant.name,
            "" if response.status_code < 500 else response.text[:200],
            "retry-after" in response.headers,
        )


def _accepted_trace_ids(response: httpx.Response, batch: int) -> list[str]:
    try:
        body = response.json()
    except ValueError:
        return []
    if not batch:
        return [body["trace_id"]] if body.get("status") == "queued" else []
    return [
        result["trace_id"]
        for result in body.get("results", [])
        if isinstance(result, dict) and result.get("status") == "queued"
    ]
