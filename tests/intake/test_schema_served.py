"""The OpenAPI schema the live API serves at /api/schema/, and its docs at /api/docs/ (Swagger UI)
and /api/redoc/ (Redoc), served from our own static files (drf-spectacular-sidecar), no CDN.

The schema is valid OpenAPI 3, describes the public API only, has an example for every answer
the README lists, and every example conforms to the schema it illustrates.
"""

import copy
import re

import jsonschema
import pytest
import yaml
from drf_spectacular.validation import validate_schema

from apps.intake.validation import EMAIL_MAX_LENGTH, TEXT_FIELDS

pytestmark = pytest.mark.django_db(transaction=True)

POSTS = ("/api/v1/leads", "/api/v1/leads/batch")
GET = "/api/v1/leads/{trace_id}"
USAGE = "/api/v1/usage"  # the tenant's overload receipt (tests/usage)


@pytest.fixture
def schema(api) -> dict:
    response = api.get("/api/schema/")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/vnd.oai.openapi")
    return yaml.safe_load(response.text)


def test_the_schema_is_valid_openapi_3_of_the_public_api_only(schema):
    validate_schema(schema)
    assert schema["openapi"].startswith("3.")
    described = {(path, method) for path, ops in schema["paths"].items() for method in ops}
    assert described == {
        (POSTS[0], "post"),
        (POSTS[1], "post"),
        (GET, "get"),
        (POSTS[0], "delete"),
        (USAGE, "get"),
    }
    scheme = schema["components"]["securitySchemes"]["ApiKey"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")


def test_a_lead_is_described_with_the_limits_the_intake_applies(schema):
    lead = schema["components"]["schemas"]["LeadRequest"]
    assert lead["required"] == ["email"]
    assert lead["additionalProperties"] is False
    assert lead["properties"]["email"]["maxLength"] == EMAIL_MAX_LENGTH
    for name, limit in TEXT_FIELDS.items():
        assert lead["properties"][name]["maxLength"] == limit
    tiers = schema["components"]["schemas"]["Tier"]["enum"]
    assert tiers == ["critical", "normal", "low"]
    batch = schema["components"]["schemas"]["BatchRequest"]["properties"]["leads"]
    assert (batch["minItems"], batch["maxItems"]) == (1, 500)


@pytest.mark.parametrize("path", POSTS)
def test_each_post_has_an_example_and_its_headers_for_every_answer(schema, path):
    operation = schema["paths"][path]["post"]
    responses = operation["responses"]
    for status in ("202", "200", "400", "401", "413", "415", "429", "503"):
        assert responses[status]["content"]["application/json"]["examples"], status
    assert responses["429"]["headers"]["Retry-After"]["required"] is True
    assert responses["503"]["headers"]["Retry-After"]["required"] is True
    for status in ("202", "200"):
        assert responses[status]["headers"]["X-LeadFlow-Mode"]["required"] is True
        assert responses[status]["links"]["GetLeadStatus"]["operationId"] == "lead_retrieve"
    assert "X-LeadFlow-Mode" in responses["429"]["headers"]
    assert responses["401"]["headers"]["WWW-Authenticate"]["required"] is True
    for status, response in responses.items():  # LeadFlow's own answers: all but gunicorn's 431
        assert ("X-Request-Id" in response.get("headers", {})) == (status != "431"), status
    [idempotency_key] = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    assert idempotency_key["in"] == "header"
    assert idempotency_key["schema"]["maxLength"] == 255


def test_the_erasure_is_described_with_its_query_and_an_example_for_every_answer(schema):
    operation = schema["paths"]["/api/v1/leads"]["delete"]
    [email] = [p for p in operation["parameters"] if p["name"] == "email"]
    assert (email["in"], email["required"], email["schema"]["format"]) == ("query", True, "email")
    assert "requestBody" not in operation
    responses = operation["responses"]
    for status in ("200", "400", "401", "429", "503"):
        assert responses[status]["content"]["application/json"]["examples"], status
    assert responses["401"]["headers"]["WWW-Authenticate"]["required"] is True
    assert responses["503"]["headers"]["Retry-After"]["required"] is True
    erased = schema["components"]["schemas"]["LeadsErased"]
    assert erased["additionalProperties"] is False


def _json_schema(node):
    """OpenAPI 3.0's schema dialect as JSON Schema: `nullable: true` as a null alternative."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _json_schema(value) for key, value in node.items()}
    if node.pop("nullable", False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


def test_every_example_conforms_to_the_schema_it_illustrates(schema):
    components = _json_schema(copy.deepcopy(schema["components"]))
    checked = 0
    for operations in schema["paths"].values():
        for operation in operations.values():
            bodies = [operation.get("requestBody", {}).get("content", {})]
            bodies += [answer.get("content", {}) for answer in operation["responses"].values()]
            for content in bodies:
                for media in content.values():
                    for example in media.get("examples", {}).values():
                        document = {**_json_schema(media["schema"]), "components": components}
                        jsonschema.validate(example["value"], document)
                        checked += 1
    assert checked >= 25


@pytest.mark.parametrize(
    ("path", "asset"), [("/api/docs/", "swagger-ui"), ("/api/redoc/", "redoc")]
)
def test_the_docs_are_served_with_our_own_static_files(api, path, asset):
    page = api.get(path)
    assert page.status_code == 200, page.text
    assert "text/html" in page.headers["Content-Type"]
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    scripts = [source for source in sources if asset in source and source.endswith(".js")]
    assert scripts, sources
    assert not [source for source in sources if source.startswith(("http:", "https:", "//"))]
    for script in scripts:
        assert api.get(script).status_code == 200, script
