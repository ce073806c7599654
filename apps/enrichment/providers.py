"""Where company profiles come from: an OpenAI-compatible HTTP provider, or local rules.

A provider answers `enrich_domains(domains) -> {domain: {industry, company_size, summary}}`
for the domains it could profile (one left out is degraded alone by the caller), or raises
ProviderError when the call failed as a whole (timeout, unreachable, 5xx, unparseable).
"""

import json
from typing import Protocol

from django.conf import settings

from leadflow.outbound import OutboundError, json_storable, outbound_post

PROFILE_FIELDS = ("industry", "company_size", "summary")
# A profile field longer than this is not a profile: the model rambled or the reply is garbage.
PROFILE_FIELD_MAX_CHARS = 1000

FREE_MAIL_DOMAINS = frozenset(
    {
        "gmail.com", "googlemail.com", "yahoo.com", "yahoo.co.uk", "yahoo.fr", "yahoo.de",
        "ymail.com", "hotmail.com", "hotmail.co.uk", "hotmail.fr", "outlook.com", "live.com",
        "msn.com", "aol.com", "icloud.com", "me.com", "mac.com", "proton.me", "protonmail.com",
        "pm.me", "gmx.com", "gmx.de", "gmx.net", "web.de", "t-online.de", "orange.fr",
        "free.fr", "laposte.net", "libero.it", "mail.ru", "yandex.ru", "yandex.com", "qq.com",
        "163.com", "126.com", "naver.com", "fastmail.com", "tutanota.com", "hey.com",
        "zoho.com", "mail.com", "mailinator.com",
    }
)  # fmt: skip

# Checked in order; the first hint found in the domain's labels decides.
_TLD_INDUSTRY = {
    "edu": "education",
    "gov": "government",
    "mil": "government",
    "org": "nonprofit",
    "ngo": "nonprofit",
    "bank": "finance",
    "finance": "finance",
    "capital": "finance",
    "insurance": "finance",
    "health": "healthcare",
    "clinic": "healthcare",
    "hospital": "healthcare",
    "shop": "retail",
    "store": "retail",
    "media": "media",
    "news": "media",
    "tv": "media",
    "io": "software",
    "ai": "software",
    "dev": "software",
    "app": "software",
    "tech": "software",
    "software": "software",
}
_KEYWORD_INDUSTRY = (
    (("bank", "capital", "invest", "finance", "insur", "credit", "pay"), "finance"),
    (("health", "medic", "clinic", "pharma", "hospital", "dental", "care"), "healthcare"),
    (("soft", "tech", "cloud", "data", "labs", "cyber", "digital", "systems"), "software"),
    (("shop", "store", "mart", "retail", "boutique", "outlet"), "retail"),
    (("media", "news", "studio", "press", "publish", "radio"), "media"),
    (("manufactur", "industr", "steel", "motor", "factory", "machin", "plastics"), "manufacturing"),
    (("school", "academy", "college", "univ", "learn"), "education"),
)
# Second-level labels under a country code that mark the kind of organisation (ac.uk, gov.br).
_SECOND_LEVEL_INDUSTRY = {"ac": "education", "edu": "education", "gov": "government"}


class ProviderError(Exception):
    """The provider did not give a usable answer: unreachable, timed out, or garbage."""


class Provider(Protocol):
    name: str
    # How many domains one call may carry; the service splits its batch accordingly.
    max_domains_per_call: int
    # The longest one call may take (the service starts a call only while one fits).
    timeout_seconds: float

    def enrich_domains(self, domains: list[str]) -> dict[str, dict]: ...


class LocalProvider:
    """Rules on the domain name alone: deterministic, no network, always answers."""

    name = "local"
    max_domains_per_call = 10_000
    timeout_seconds = 0.0

    def enrich_domains(self, domains: list[str]) -> dict[str, dict]:
        return {domain: domain_profile_local(domain) for domain in domains}


def domain_profile_local(domain: str) -> dict:
    """Industry, size and summary inferred from the domain's name and its top-level domain."""
    domain = domain.strip().lower().rstrip(".")
    if domain in FREE_MAIL_DOMAINS:
        return {
            "industry": "consumer",
            "company_size": "individual",
            "summary": f"Personal address at the free e-mail provider {domain}.",
        }
    labels = domain.split(".")
    if len(labels) < 2 or not all(labels):
        return {
            "industry": "unknown",
            "company_size": "unknown",
            "summary": f"{domain or 'No domain'}: not a domain name the local rules can read.",
        }
    industry = _industry_local(labels)
    return {
        "industry": industry,
        "company_size": "unknown",
        "summary": f"{domain}: {industry}, inferred from the domain name (no AI provider).",
    }


def _industry_local(labels: list[str]) -> str:
    tld = labels[-1]
    if tld in _TLD_INDUSTRY:
        return _TLD_INDUSTRY[tld]
    if len(labels) >= 3 and labels[-2] in _SECOND_LEVEL_INDUSTRY:
        return _SECOND_LEVEL_INDUSTRY[labels[-2]]
    # The registered name: "acme" in acme.com, "acme" in shop.acme.co.uk is close enough.
    name = ".".join(labels[:-1])
    for keywords, industry in _KEYWORD_INDUSTRY:
        if any(keyword in name for keyword in keywords):
            return industry
    return "unknown"


SYSTEM_PROMPT = (
    "You profile companies from their web domain. The user message is JSON "
    '{"domains": [...]}. Answer with one JSON object, nothing else: '
    '{"results": {"<domain>": {"industry": str, "company_size": str, "summary": str}}} '
    "with every domain you were given as a key. company_size is one of 1-10, 11-50, "
    "51-200, 201-1000, 1000+ or unknown; summary is one sentence."
)


class HttpProvider:
    """An OpenAI-compatible chat-completions endpoint, asked for up to 50 domains per request.

    `base_url` is the server's root without /v1 (https://api.openai.com); a trailing /v1 is
    accepted too, so a base URL copied from an OpenAI SDK setting works as it is.
    """

    name = "http"
    max_domains_per_call = 50

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str,
        timeout_seconds: float,
        max_reply_bytes: int = 1024 * 1024,
    ) -> None:
        root = base_url.rstrip("/")
        self.endpoint = root + (
            "/chat/completions" if root.endswith("/v1") else "/v1/chat/completions"
        )
        self.model = model
        # One call's total deadline: connect, send and the whole reply (leadflow/outbound.py).
        self.timeout_seconds = timeout_seconds
        self.max_reply_bytes = max_reply_bytes
        self._headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"

    def enrich_domains(self, domains: list[str]) -> dict[str, dict]:
        results: dict[str, dict] = {}
        for start in range(0, len(domains), self.max_domains_per_call):
            results.update(self._ask(domains[start : start + self.max_domains_per_call]))
        return results

    def _ask(self, domains: list[str]) -> dict[str, dict]:
        body = {
            "model": self.model,
            "temperature": 0,
            "response_format": {"type": "json_object"},
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": json.dumps({"domains": domains})},
            ],
        }
        try:
            reply = outbound_post(
                self.endpoint,
                content=json.dumps(body).encode(),
                headers=self._headers,
                deadline_seconds=self.timeout_seconds,
                max_bytes=self.max_reply_bytes,
                dependency="ai",
            )
        except OutboundError as error:
            raise ProviderError(f"AI provider ({self.endpoint}): {error}") from None
        if reply.status != 200:
            raise ProviderError(f"AI provider answered HTTP {reply.status}: {reply.excerpt(200)!r}")
        if reply.truncated:
            raise ProviderError(f"AI provider reply is over {self.max_reply_bytes} bytes")
        return chat_reply_profiles(reply.body, domains)


def chat_reply_profiles(body: bytes, domains: list[str]) -> dict[str, dict]:
    """The usable profiles in a chat-completions reply, by asked domain.

    A domain the reply leaves out, or gives a bad profile for, is missing from the result (the
    caller degrades that domain alone: the provider did answer). ProviderError only when the
    reply as a whole is unusable.
    """
    try:
        content = json.loads(body)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError, RecursionError):
        raise ProviderError(f"AI provider reply is not a chat completion: {body[:200]!r}") from None
    if not isinstance(content, str):
        raise ProviderError("AI provider reply has no text content")
    try:
        results = json.loads(_strip_code_fence(content))["results"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise ProviderError(
            f"AI provider content is not JSON with 'results': {content[:200]!r}"
        ) from None
    if not isinstance(results, dict):
        raise ProviderError("AI provider 'results' is not an object")
    by_domain = {str(key).strip().lower(): value for key, value in results.items()}
    profiles: dict[str, dict] = {}
    for domain in domains:
        profile = _profile_usable(by_domain.get(domain))
        if profile is not None:
            profiles[domain] = profile
    return profiles


def _profile_usable(profile) -> dict | None:
    """The profile's fields, stripped, if each is a string of sensible length that PostgreSQL
    can store (no NUL, no lone surrogate); else None."""
    if not isinstance(profile, dict):
        return None
    values = {field: profile.get(field) for field in PROFILE_FIELDS}
    if not all(
        isinstance(value, str) and len(value) <= PROFILE_FIELD_MAX_CHARS
        for value in values.values()
    ):
        return None
    stripped = {field: value.strip() for field, value in values.items()}
    return stripped if json_storable(stripped) else None


def _strip_code_fence(content: str) -> str:
    # Some models wrap JSON in a markdown fence even when asked for a JSON object.
    text = content.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.removesuffix("```").strip()
    return text


def provider_from_settings() -> Provider:
    """The HTTP provider when AI_PROVIDER_URL is set, else the local rules. Cheap: the
    connection pool is leadflow.outbound's, one per process."""
    if not settings.AI_PROVIDER_URL:
        return LocalProvider()
    return HttpProvider(
        settings.AI_PROVIDER_URL,
        settings.AI_PROVIDER_MODEL,
        settings.AI_PROVIDER_API_KEY,
        settings.AI_PROVIDER_TIMEOUT_SECONDS,
        settings.AI_RESPONSE_MAX_BYTES,
    )
