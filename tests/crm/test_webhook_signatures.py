"""Standard Webhooks: real deliveries, received by the HTTP double, verified with the
`standardwebhooks` library's own Webhook.verify, as a receiver does (README: Webhooks)."""

from datetime import datetime, timedelta

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from apps.crm.services import leads_sync
from apps.tenants.models import webhook_signing_secrets
from apps.tenants.services import webhook_secret_create, webhook_secret_revoke_older
from tests.factories import lead_for_crm_make, lead_ids

pytestmark = pytest.mark.django_db


def delivered(crm) -> tuple[str, dict]:
    """The last delivery's raw body and headers, as the receiver got them."""
    call = crm.calls("crm")[-1]
    return call["raw"], call["headers"]


class _SixMinutesLater(datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime.now(tz) + timedelta(minutes=6)


def test_a_delivery_verifies_with_the_receivers_library_and_the_tenants_secret(crm, webhook_tenant):
    leads = [lead_for_crm_make(webhook_tenant) for _ in range(2)]
    leads_sync(lead_ids(leads))

    raw, headers = delivered(crm)
    [secret] = webhook_signing_secrets(webhook_tenant)
    assert secret.startswith("whsec_")
    payload = Webhook(secret).verify(raw, headers)
    assert {lead["trace_id"] for lead in payload["leads"]} == set(lead_ids(leads))
    assert headers["webhook-signature"].startswith("v1,")


def test_a_tampered_body_or_another_secret_fails_verification(crm, webhook_tenant):
    leads_sync(lead_ids([lead_for_crm_make(webhook_tenant)]))
    raw, headers = delivered(crm)
    [secret] = webhook_signing_secrets(webhook_tenant)

    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(secret).verify(raw.replace("Ada Lovelace", "Eve"), headers)
    other = webhook_secret_create(webhook_tenant)  # did not sign this delivery
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(other).verify(raw, headers)


def test_a_replayed_delivery_older_than_the_tolerance_fails_verification(
    crm, webhook_tenant, monkeypatch
):
    leads_sync(lead_ids([lead_for_crm_make(webhook_tenant)]))
    raw, headers = delivered(crm)
    [secret] = webhook_signing_secrets(webhook_tenant)
    Webhook(secret).verify(raw, headers)  # fresh: accepted

    # The same captured delivery presented 6 minutes later (the receiver's clock moved on).
    monkeypatch.setattr("standardwebhooks.webhooks.datetime", _SixMinutesLater)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(raw, headers)
    # And its timestamp cannot be refreshed: it is signed.
    restamped = {**headers, "webhook-timestamp": str(int(_SixMinutesLater.now().timestamp()))}
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(secret).verify(raw, restamped)


def test_webhook_id_is_the_same_for_the_same_leads_across_retries(crm, webhook_tenant):
    crm.configure("crm", fail_first=1)
    leads = [lead_for_crm_make(webhook_tenant) for _ in range(2)]

    assert leads_sync(lead_ids(leads)).retry  # the 503
    leads_sync(lead_ids(leads), attempt=1)  # the retry, delivered

    first, second = crm.calls("crm")
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"]
    [secret] = webhook_signing_secrets(webhook_tenant)
    Webhook(secret).verify(second["raw"], second["headers"])
    other = lead_for_crm_make(webhook_tenant)
    leads_sync(lead_ids([other]))
    assert crm.calls("crm")[-1]["headers"]["webhook-id"] != first["headers"]["webhook-id"]


def test_during_a_rotation_both_secrets_verify_and_after_it_only_the_new_one(crm, webhook_tenant):
    [old] = webhook_signing_secrets(webhook_tenant)
    new = webhook_secret_create(webhook_tenant)

    leads_sync(lead_ids([lead_for_crm_make(webhook_tenant)]))
    raw, headers = delivered(crm)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(raw, headers)  # receivers not yet moved
    Webhook(new).verify(raw, headers)  # receivers moved

    webhook_secret_revoke_older(webhook_tenant)
    leads_sync(lead_ids([lead_for_crm_make(webhook_tenant)]))
    raw, headers = delivered(crm)
    Webhook(new).verify(raw, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(raw, headers)
