"""api/openapi.yaml describes exactly the HTTP contract of docs/api.md.

The document is checked against the official OpenAPI 3.1 meta-schema (OAI's
schemas/v3.1, shipped in openapi-spec-validator), its Schema Objects against the
JSON Schema 2020-12 meta-schema, and its cross references and conventions one by one.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from jsonschema import Draft202012Validator
from jsonschema_path import SchemaPath
from openapi_spec_validator import OpenAPIV31SpecValidator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

DOCUMENT_PATH = Path(__file__).resolve().parents[2] / "api" / "openapi.yaml"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
PROBLEM_REF = "#/components/schemas/Problem"
REQUEST_ID_REF = "#/components/headers/X-Request-Id"
DOC_URI = "urn:mfa-backup-codes:openapi"

UNAUTHENTICATED = {
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/v1/repudiations/{ticket}",
    "/ui/session",
}
# The browser session's own operation: the cookie, never the bearer header.
BY_COOKIE = {("/ui/session", "get")}

# Every status docs/api.md names, plus 401/403/429 (throttled refusals) for /v1, 400/422 for
# input, 404 where a resource id is in the path, 413 on POST/PUT.
EXPECTED: dict[tuple[str, str], str] = {
    ("/healthz", "get"): "200",
    ("/readyz", "get"): "200 503",
    ("/openapi.json", "get"): "200",
    ("/v1/me/mfa", "get"): "200 401 403 429 503",
    ("/v1/me/mfa/enrollment", "post"): "201 400 401 403 409 413 422 429 503",
    ("/v1/me/mfa/enrollment/confirm", "post"): "201 400 401 403 409 413 422 429 503",
    ("/v1/me/backup-codes/regenerations", "post"): "202 400 401 403 409 413 422 429 503",
    ("/v1/me/backup-codes/regenerations/{regeneration_id}", "get"): "200 401 403 404 429 503",
    (
        "/v1/me/backup-codes/regenerations/{regeneration_id}/sheet",
        "get",
    ): "200 401 403 404 409 410 429 503",
    ("/v1/users/{user_id}/backup-codes/verify", "post"): "200 400 401 403 404 409 413 422 429 503",
    ("/v1/org/policy", "get"): "200 401 403 429 503",
    ("/v1/org/policy", "put"): "200 400 401 403 413 422 429 503",
    ("/v1/users/{user_id}/backup-codes/revocation", "post"): "204 400 401 403 404 413 422 429 503",
    ("/v1/users/{user_id}/mfa", "delete"): "204 401 403 404 429 503",
    ("/v1/users/{user_id}/mfa/unlock", "post"): "204 400 401 403 404 413 422 429 503",
    ("/v1/org/webhooks", "post"): "201 400 401 403 409 413 422 429 503",
    ("/v1/org/webhooks", "get"): "200 401 403 429 503",
    ("/v1/org/webhooks/{webhook_id}", "get"): "200 401 403 404 429 503",
    ("/v1/org/webhooks/{webhook_id}", "patch"): "200 400 401 403 404 413 422 429 503",
    ("/v1/org/webhooks/{webhook_id}", "delete"): "204 401 403 404 429 503",
    ("/v1/org/webhooks/{webhook_id}/secret", "post"): "201 400 401 403 404 413 422 429 503",
    ("/v1/org/webhooks/{webhook_id}/ping", "post"): "202 400 401 403 404 413 422 429 503",
    ("/v1/org/webhooks/{webhook_id}/deliveries", "get"): "200 400 401 403 404 422 429 503",
    (
        "/v1/org/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
        "post",
    ): "202 400 401 403 404 413 422 429 503",
    ("/v1/audit/events", "get"): "200 400 401 403 422 429 503",
    ("/v1/audit/verification", "get"): "200 401 403 429 503",
    ("/v1/repudiations/{ticket}", "get"): "200 404 410 429 503",
    ("/v1/repudiations/{ticket}", "post"): "200 204 404 410 413 429 503",
    ("/v1/users/{user_id}/totp/verify", "post"): "200 400 401 403 404 409 413 422 429 503",
    ("/v1/users/{user_id}/tokens", "post"): "201 400 401 403 404 413 422 429 503",
    ("/v1/org/tokens", "get"): "200 400 401 403 422 429 503",
    ("/v1/org/tokens/{token_id}", "delete"): "204 400 401 403 404 429 503",
    ("/v1/me/token", "delete"): "204 400 401 403 429 503",
    ("/v1/users", "get"): "200 400 401 403 422 429 503",
    ("/v1/users/{user_id}", "put"): "200 201 400 401 403 413 422 429 503",
    ("/v1/users/{user_id}", "get"): "200 401 403 404 429 503",
    ("/v1/users/{user_id}", "delete"): "204 401 403 404 429 503",
    ("/v1/me/events", "get"): "200 400 401 403 422 429 503",
    ("/v1/users/{user_id}/ui-links", "post"): "201 400 401 403 404 413 422 429 503",
    ("/ui/session", "post"): "200 400 403 410 413 415 422 429 503",
    ("/ui/session", "get"): "200 401 429 503",
}
# Operations any authenticated principal may call (`x-role: any`): sign-out.
ANY_ROLE = "any"
# Bodies that may be left out, every field with a default: POST /v1/users/{id}/tokens.
OPTIONAL_BODIES = {("/v1/users/{user_id}/tokens", "post")}


# --- helpers -----------------------------------------------------------------


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    with DOCUMENT_PATH.open(encoding="utf-8") as handle:
        loaded = yaml.safe_load(handle)
    assert isinstance(loaded, dict)
    return loaded


def _pointer(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"only local references are used: {ref}"
    node: Any = document
    for raw in ref[2:].split("/"):
        key = raw.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and key in node, f"unresolved $ref {ref}"
        node = node[key]
    return node


def _resolve(document: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = _pointer(document, node["$ref"])
    return node


def _walk(node: Any, where: str = "#") -> Iterator[tuple[str, Any]]:
    yield where, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{where}/{index}")


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def _responses(document: dict[str, Any]) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    for path, method, operation in _operations(document):
        for status, response in operation["responses"].items():
            yield path, method, status, _resolve(document, response)


def _schema_objects(document: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Components' schemas, then the schema of every parameter, header and media type."""
    for name, schema in document["components"]["schemas"].items():
        yield f"#/components/schemas/{name}", schema
    for where, node in _walk(document):
        if isinstance(node, dict) and "schema" in node and "/components/schemas" not in where:
            yield f"{where}/schema", node["schema"]


def _validator(document: dict[str, Any], schema_name: str) -> Draft202012Validator:
    registry = Registry().with_resource(DOC_URI, DRAFT202012.create_resource(document))
    return Draft202012Validator(
        {"$ref": f"{DOC_URI}#/components/schemas/{schema_name}"},
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def _validator_for(document: dict[str, Any], schema: Any) -> Draft202012Validator:
    registry = Registry().with_resource(DOC_URI, DRAFT202012.create_resource(document))
    wrapped = json.loads(json.dumps(schema).replace('"#/', f'"{DOC_URI}#/'))
    return Draft202012Validator(wrapped, registry=registry)


# --- the document as a whole -------------------------------------------------


def test_the_document_is_openapi_3_1_0(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"


def test_info_and_servers_name_the_project(doc: dict[str, Any]) -> None:
    assert doc["info"]["title"] == "mfa-backup-codes"
    assert doc["info"]["version"] == "0.1.0"
    assert doc["servers"] == [{"url": "/"}]


def test_the_document_is_plain_json_data(doc: dict[str, Any]) -> None:
    # Served as /openapi.json: no YAML-only values (dates, non-string keys) may hide in it.
    assert json.loads(json.dumps(doc)) == doc


def openapi_31_errors(document: dict[str, Any]) -> list[str]:
    validator = OpenAPIV31SpecValidator(SchemaPath.from_dict(document))
    return [f"{list(e.path)}: {e.message.splitlines()[0]}" for e in validator.iter_errors()]


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    errors = openapi_31_errors(doc)
    assert not errors, "\n".join(errors[:20])


def _unknown_field_in_an_operation(d: dict[str, Any]) -> None:
    d["paths"]["/healthz"]["get"]["colour"] = "red"


def _a_status_that_is_not_one(d: dict[str, Any]) -> None:
    responses = d["paths"]["/healthz"]["get"]["responses"]
    responses["2000"] = responses["200"]


def _a_path_parameter_not_required(d: dict[str, Any]) -> None:
    d["components"]["parameters"]["UserId"]["required"] = False


def _a_response_without_description(d: dict[str, Any]) -> None:
    del d["paths"]["/healthz"]["get"]["responses"]["200"]["description"]


def _openapi_3_0(d: dict[str, Any]) -> None:
    d["openapi"] = "3.0.3"


@pytest.mark.parametrize(
    "spoil",
    [
        _unknown_field_in_an_operation,
        _a_status_that_is_not_one,
        _a_path_parameter_not_required,
        _a_response_without_description,
        _openapi_3_0,
    ],
)
def test_the_openapi_check_refuses_a_spoiled_document(
    doc: dict[str, Any], spoil: Callable[[dict[str, Any]], None]
) -> None:
    spoiled = copy.deepcopy(doc)
    spoil(spoiled)
    assert openapi_31_errors(spoiled)


def test_every_schema_object_is_valid_json_schema_2020_12(doc: dict[str, Any]) -> None:
    seen = 0
    for where, schema in _schema_objects(doc):
        seen += 1
        try:
            Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as error:  # pragma: no cover - reports the culprit
            pytest.fail(f"{where}: {error.message}")
    assert seen > len(doc["components"]["schemas"])


def test_nullability_uses_json_schema_types_not_nullable(doc: dict[str, Any]) -> None:
    offenders = [
        where
        for where, node in _walk(doc)
        if isinstance(node, dict) and ("nullable" in node or "x-nullable" in node)
    ]
    assert offenders == []


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    refs = [node["$ref"] for _, node in _walk(doc) if isinstance(node, dict) and "$ref" in node]
    assert refs
    for ref in refs:
        _pointer(doc, ref)


def test_every_component_is_used(doc: dict[str, Any]) -> None:
    used = {node["$ref"] for _, node in _walk(doc) if isinstance(node, dict) and "$ref" in node}
    for kind, entries in doc["components"].items():
        if kind == "securitySchemes":
            continue
        for name in entries:
            assert f"#/components/{kind}/{name}" in used, f"unused component {kind}/{name}"


# --- paths and operations ----------------------------------------------------


def test_paths_and_methods_are_exactly_those_of_the_contract(doc: dict[str, Any]) -> None:
    found = {(path, method) for path, method, _ in _operations(doc)}
    assert found == set(EXPECTED)


@pytest.mark.parametrize(("path", "method"), sorted(EXPECTED))
def test_each_operation_answers_the_statuses_of_the_contract(
    doc: dict[str, Any], path: str, method: str
) -> None:
    assert set(doc["paths"][path][method]["responses"]) == set(EXPECTED[(path, method)].split())


def test_every_operation_has_a_unique_operation_id_and_a_summary(doc: dict[str, Any]) -> None:
    ids = []
    for path, method, operation in _operations(doc):
        assert operation.get("summary"), f"{method} {path} has no summary"
        assert operation.get("description"), f"{method} {path} has no description"
        assert re.fullmatch(r"[a-z][A-Za-z0-9]+", operation.get("operationId", "")), path
        ids.append(operation["operationId"])
    assert len(ids) == len(set(ids))


def test_every_path_template_parameter_is_declared(doc: dict[str, Any]) -> None:
    for path, method, operation in _operations(doc):
        declared = [
            _resolve(doc, p)
            for p in doc["paths"][path].get("parameters", []) + operation.get("parameters", [])
        ]
        in_path = [p["name"] for p in declared if p["in"] == "path"]
        assert sorted(in_path) == sorted(re.findall(r"{([^}]+)}", path)), f"{method} {path}"
        assert all(p["required"] is True for p in declared if p["in"] == "path")
        keys = [(p["name"].lower(), p["in"]) for p in declared]
        assert len(keys) == len(set(keys)), f"{method} {path} declares a parameter twice"
    names = {n for path in doc["paths"] for n in re.findall(r"{([^}]+)}", path)}
    assert names == {
        "regeneration_id",
        "token_id",
        "user_id",
        "webhook_id",
        "delivery_id",
        "ticket",
    }


def test_v1_operations_need_a_bearer_token_and_the_others_none(doc: dict[str, Any]) -> None:
    bearer = doc["components"]["securitySchemes"]["bearer"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    assert doc["security"] == [{"bearer": []}]
    session = doc["components"]["securitySchemes"]["session"]
    assert (session["type"], session["in"], session["name"]) == ("apiKey", "cookie", "mfa_session")
    for path, method, operation in _operations(doc):
        if (path, method) in BY_COOKIE:
            assert operation["security"] == [{"session": []}], f"{method} {path}"
            assert operation["x-role"] == ANY_ROLE and "401" in operation["responses"]
        elif path in UNAUTHENTICATED:
            assert operation["security"] == [], f"{method} {path}"
        else:
            assert path.startswith("/v1/")
            assert operation.get("security", doc["security"]) == [{"bearer": []}]
            assert {"401", "403"} <= set(operation["responses"]), f"{method} {path}"
            roles = {"user", "service", "admin", "auditor"}
            assert operation.get("x-role") in roles | {ANY_ROLE}
            # x-roles: every role admitted, when more than one; x-role (the first) is the
            # one the fuzzer calls with.
            admitted = operation.get("x-roles", [operation["x-role"]])
            assert set(admitted) <= roles | {ANY_ROLE} and admitted[0] == operation["x-role"]


# PUT /v1/users/{user_id} creates the user it names: it never answers 404.
CREATES_WHAT_IT_NAMES = {("/v1/users/{user_id}", "put")}


def test_resource_ids_in_the_path_may_answer_404(doc: dict[str, Any]) -> None:
    for path, method, operation in _operations(doc):
        if "{" in path and (path, method) not in CREATES_WHAT_IT_NAMES:
            assert "404" in operation["responses"], f"{method} {path}"
    for path, method in CREATES_WHAT_IT_NAMES:
        assert "404" not in doc["paths"][path][method]["responses"]


def test_post_and_put_refuse_oversize_bodies_with_413(doc: dict[str, Any]) -> None:
    for path, method, operation in _operations(doc):
        if method in {"post", "put"}:
            assert "413" in operation["responses"], f"{method} {path}"


# --- responses ---------------------------------------------------------------


def test_every_response_carries_the_shared_x_request_id_header(doc: dict[str, Any]) -> None:
    for path, method, status, response in _responses(doc):
        header = response.get("headers", {}).get("X-Request-Id")
        assert header == {"$ref": REQUEST_ID_REF}, f"{method} {path} {status}"
    assert _pointer(doc, REQUEST_ID_REF)["required"] is True


def test_every_4xx_response_is_a_problem_document(doc: dict[str, Any]) -> None:
    for path, method, status, response in _responses(doc):
        if status.startswith("4"):
            assert set(response.get("content", {})) == {"application/problem+json"}, (
                f"{method} {path} {status}"
            )
            schema = response["content"]["application/problem+json"]["schema"]
            assert schema == {"$ref": PROBLEM_REF}, f"{method} {path} {status}"


def test_status_specific_headers(doc: dict[str, Any]) -> None:
    for path, method, status, response in _responses(doc):
        headers = {name: _resolve(doc, h) for name, h in response.get("headers", {}).items()}
        where = f"{method} {path} {status}"
        if status == "401":
            assert headers["WWW-Authenticate"]["required"] is True, where
        if status in ("429", "503") and path.startswith("/v1/"):
            assert headers["Retry-After"]["required"] is True, where
        if status == "202":
            assert headers["Location"]["required"] is True, where
        if status == "204":
            assert "content" not in response, where
    sheet_409 = doc["paths"]["/v1/me/backup-codes/regenerations/{regeneration_id}/sheet"]["get"][
        "responses"
    ]["409"]
    assert "Retry-After" in sheet_409["headers"]


@pytest.mark.parametrize(
    ("path", "method", "status"),
    [
        ("/v1/me/mfa/enrollment", "post", "201"),
        ("/v1/me/mfa/enrollment/confirm", "post", "201"),
        ("/v1/me/backup-codes/regenerations/{regeneration_id}/sheet", "get", "200"),
    ],
)
def test_sensitive_responses_are_not_stored(
    doc: dict[str, Any], path: str, method: str, status: str
) -> None:
    header = _resolve(
        doc, doc["paths"][path][method]["responses"][status]["headers"]["Cache-Control"]
    )
    assert header["required"] is True
    assert re.search(header["schema"]["pattern"], "no-store")


def test_the_sheet_is_a_pdf_or_plain_text_with_a_content_disposition(doc: dict[str, Any]) -> None:
    ok = doc["paths"]["/v1/me/backup-codes/regenerations/{regeneration_id}/sheet"]["get"][
        "responses"
    ]["200"]
    assert set(ok["content"]) == {"application/pdf", "text/plain"}
    assert ok["content"]["application/pdf"]["schema"] == {
        "type": "string",
        "contentMediaType": "application/pdf",
    }
    assert "Content-Disposition" in ok["headers"]


def test_audit_events_come_as_json_ndjson_or_csv_with_their_filters(doc: dict[str, Any]) -> None:
    operation = doc["paths"]["/v1/audit/events"]["get"]
    content = operation["responses"]["200"]["content"]
    assert set(content) == {"application/json", "application/x-ndjson", "text/csv"}
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/AuditPage"}
    params = {p["name"]: p for p in operation["parameters"]}
    assert set(params) == {"user_id", "type", "since", "until", "request_id", "limit", "cursor"}
    assert all(p["in"] == "query" for p in params.values())
    assert params["type"]["schema"]["type"] == "array"
    assert params["type"]["explode"] is True
    assert params["since"]["schema"]["format"] == params["until"]["schema"]["format"] == "date-time"
    assert params["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 1000,
        "default": 100,
    }


def test_readiness_answers_the_same_body_for_200_and_503(doc: dict[str, Any]) -> None:
    responses = doc["paths"]["/readyz"]["get"]["responses"]
    for status in ("200", "503"):
        assert responses[status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Readiness"
        }


# --- request bodies ----------------------------------------------------------


def test_request_bodies_are_strict_json_objects(doc: dict[str, Any]) -> None:
    bodies = 0
    for path, method, operation in _operations(doc):
        if "requestBody" not in operation:
            continue
        bodies += 1
        body = _resolve(doc, operation["requestBody"])
        assert set(body["content"]) == {"application/json"}, f"{method} {path}"
        schema = _resolve(doc, body["content"]["application/json"]["schema"])
        assert schema["type"] == "object" and schema["additionalProperties"] is False
        if (path, method) in OPTIONAL_BODIES:
            assert body["required"] is False
            assert not schema.get("required")
            assert all("default" in f for f in schema["properties"].values())
            continue
        assert body["required"] is True
        # Every field is required but what the sign-in front end saw of its visitor,
        # a webhook's description, the policy's mail settings, and what an upsert or a PATCH
        # leaves as it is.
        optional = {"client_ip", "user_agent"} if path.endswith("/verify") else set()
        if path == "/v1/org/webhooks":
            optional = {"description"}
        if path == "/v1/org/policy":
            optional = {"notify_users", "support_contact"}
        if (path, method) == ("/v1/users/{user_id}", "put") or method == "patch":
            optional = set(schema["properties"])
        assert set(schema.get("required", [])) == set(schema["properties"]) - optional
        assert optional <= set(schema["properties"])
    assert bodies == 11


def test_idempotency_key_is_an_optional_header_on_regeneration_requests(
    doc: dict[str, Any],
) -> None:
    operation = doc["paths"]["/v1/me/backup-codes/regenerations"]["post"]
    (param,) = [_resolve(doc, p) for p in operation["parameters"]]
    assert (param["name"], param["in"], param["required"]) == ("Idempotency-Key", "header", False)
    assert param["schema"] == {"type": "string", "minLength": 1, "maxLength": 255}


# --- schemas against instances from docs/api.md -----------------------------------

REGENERATION = {
    "id": "r-1",
    "status": "ready",
    "reason": "enrollment",
    "failure": None,
    "created_at": "2026-11-28T09:14:03.120Z",
    "completed_at": "2026-11-28T09:14:04.001Z",
    "expires_at": "2026-11-28T09:29:04.001Z",
    "code_count": 5,
    "links": {
        "self": "/v1/me/backup-codes/regenerations/r-1",
        "sheet": "/v1/me/backup-codes/regenerations/r-1/sheet",
    },
}
EVENT = {
    "seq": 42,
    "id": "e-42",
    "occurred_at": "2026-11-28T09:14:03.120Z",
    "type": "backup_codes.regenerated",
    "outcome": "success",
    "actor": {"principal_id": "alice", "role": "user", "token_id": "t-1"},
    "user_id": "alice",
    "request_id": "req-1",
    "server_request_id": "3f2a9c0d5e6b4a7f8e1d2c3b4a596877",
    "source_ip": "127.0.0.1",
    "user_agent": "curl/8",
    "details": {},
    "prev_hash": "ab" * 32,
    "hash": "cd" * 32,
}

VALID = [
    ("TotpSubmission", {"totp": "123456"}),
    ("BackupCodeSubmission", {"code": " abcde-fghij "}),
    ("Policy", {"backup_codes_enabled": True, "code_count": 20}),
    (
        "MfaStatus",
        {
            "enrolled": False,
            "enrolled_at": None,
            "backup_codes_enabled": True,
            "backup_codes": None,
            "last_set_expired_unseen": False,
            "limits": {
                "totp_throttled_until": None,
                "totp_locked": False,
                "backup_codes_locked": False,
            },
        },
    ),
    (
        "MfaStatus",
        {
            "enrolled": True,
            "enrolled_at": "2026-11-28T09:00:00.000Z",
            "backup_codes_enabled": True,
            "backup_codes": {
                "set_id": "K7Q2",
                "remaining": 2,
                "total": 5,
                "low": True,
                "generated_at": "2026-11-28T09:14:03.120Z",
                "last_used_at": None,
                "format": 16,
            },
            "last_set_expired_unseen": False,
            "limits": {
                "totp_throttled_until": "2026-11-28T09:29:03.120Z",
                "totp_locked": False,
                "backup_codes_locked": True,
            },
        },
    ),
    (
        "MfaStatus",
        {
            "enrolled": True,
            "enrolled_at": "2026-11-28T09:00:00.000Z",
            "backup_codes_enabled": True,
            "backup_codes": None,
            "last_set_expired_unseen": True,
            "limits": {
                "totp_throttled_until": None,
                "totp_locked": False,
                "backup_codes_locked": False,
            },
        },
    ),
    (
        "Enrollment",
        {
            "secret": "JBSWY3DPEHPK3PXP",
            "otpauth_uri": "otpauth://totp/acme:alice?secret=JBSWY3DPEHPK3PXP",
        },
    ),
    ("EnrollmentConfirmation", {"enrolled": True, "regeneration": REGENERATION}),
    ("EnrollmentConfirmation", {"enrolled": True, "regeneration": None}),
    ("Regeneration", REGENERATION),
    ("Regeneration", {**REGENERATION, "status": "failed", "failure": "totp-replayed"}),
    ("VerifyResult", {"accepted": False, "mistyped": False, "remaining": 5, "low": False}),
    ("VerifyResult", {"accepted": False, "mistyped": True, "remaining": 5, "low": False}),
    ("AuditEvent", EVENT),
    (
        "AuditEvent",
        {
            **EVENT,
            "actor": {"principal_id": None, "role": None, "token_id": None},
            "user_id": None,
            "request_id": None,
            "source_ip": None,
            "user_agent": None,
        },
    ),
    ("AuditPage", {"events": [EVENT], "next": None}),
    (
        "Verification",
        {
            "ok": True,
            "events_checked": 0,
            "head": None,
            "first_bad_seq": None,
            "reason": None,
            "checkpoint": None,
            "unsigned_events": 0,
        },
    ),
    (
        "Verification",
        {
            "ok": False,
            "events_checked": 42,
            "head": {"seq": 42, "hash": "cd" * 32},
            "first_bad_seq": 7,
            "reason": "event 7 does not match its hash (edited)",
            "checkpoint": {
                "seq": 40,
                "hash": "ab" * 32,
                "signed_at": "2026-12-02T01:00:00.000Z",
                "key_id": "0123456789abcdef",
                "verified": True,
            },
            "unsigned_events": 2,
        },
    ),
    ("Health", {"status": "ok"}),
    ("Readiness", {"status": "unavailable", "checks": {"database": "ok", "broker": "unavailable"}}),
    (
        "Problem",
        {
            "type": "/problems/invalid-request",
            "title": "Bad",
            "status": 422,
            "detail": "totp",
            "field": "totp",
            "instance": "/x",
        },
    ),
    (
        "Problem",
        {
            "type": "/problems/too-many-attempts",
            "title": "Slow down",
            "status": 429,
            "retry_after": 60,
            "field": None,
        },
    ),
]

INVALID = [
    ("TotpSubmission", {"totp": "12345"}),
    ("TotpSubmission", {"totp": "1234567"}),
    ("TotpSubmission", {"totp": "12a456"}),
    ("TotpSubmission", {"totp": 123456}),
    ("TotpSubmission", {"totp": "123456\n"}),
    ("TotpSubmission", {"totp": "123456", "extra": 1}),
    ("TotpSubmission", {}),
    ("BackupCodeSubmission", {"code": ""}),
    ("BackupCodeSubmission", {"code": "x" * 65}),
    ("BackupCodeSubmission", {"code": "abc", "user": "bob"}),
    ("Policy", {"backup_codes_enabled": True, "code_count": 0}),
    ("Policy", {"backup_codes_enabled": True, "code_count": 21}),
    ("Policy", {"backup_codes_enabled": "yes", "code_count": 5}),
    ("Policy", {"code_count": 5}),
    ("Policy", {"backup_codes_enabled": True}),
    ("Regeneration", {**REGENERATION, "status": "done"}),
    ("Regeneration", {**REGENERATION, "failure": "boom"}),
    ("Regeneration", {**REGENERATION, "reason": "manual"}),
    ("Regeneration", {key: v for key, v in REGENERATION.items() if key != "expires_at"}),
    ("AuditEvent", {**EVENT, "outcome": "ok"}),
    ("Verification", {"ok": True, "events_checked": 0, "head": None, "first_bad_seq": None}),
    ("Readiness", {"status": "ok", "database": "ok", "broker": "ok"}),
    ("Problem", {"type": "/problems/x", "title": "No status"}),
]


@pytest.mark.parametrize(("name", "instance"), VALID)
def test_schemas_accept_what_the_contract_shows(
    doc: dict[str, Any], name: str, instance: Any
) -> None:
    errors = [e.message for e in _validator(doc, name).iter_errors(instance)]
    assert errors == [], f"{name}: {errors}"


@pytest.mark.parametrize(("name", "instance"), INVALID)
def test_schemas_refuse_what_the_contract_forbids(
    doc: dict[str, Any], name: str, instance: Any
) -> None:
    assert not _validator(doc, name).is_valid(instance)


def test_every_example_matches_its_schema(doc: dict[str, Any]) -> None:
    checked = 0
    for where, node in _walk(doc):
        if not isinstance(node, dict) or "schema" not in node:
            continue
        examples = [e["value"] for e in node.get("examples", {}).values()]
        examples += [node["example"]] if "example" in node else []
        for example in examples:
            checked += 1
            errors = list(_validator_for(doc, node["schema"]).iter_errors(example))
            assert not errors, f"{where}: {errors[0].message}"
    for name, schema in doc["components"]["schemas"].items():
        for example in schema.get("examples", []):
            checked += 1
            _validator(doc, name).validate(example)
    assert checked > 10
