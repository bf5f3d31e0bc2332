"""Deterministic control-character pass for scripts/schemathesis.

Schemathesis may put NUL in a generated string, but only by chance. This pass makes sure
every string field of every JSON request body (and every string path/query parameter) in
/openapi.json is sent once with "a\\u0000b" and once with "a\\u0007b", the other fields
holding plausible values so the request gets past the first validation, and fails on any
5xx or dropped connection.

Usage: python schemathesis_nul_fields.py BASE_URL JUNIT_OUT [COOKIE]
One JUnit test case per operation (failed if any of its requests got a 5xx), so the
caller can count it like schemathesis's own JUnit report.
"""
import json
import sys
import uuid
import xml.etree.ElementTree as ET
from urllib.parse import quote

import requests

BAD = ["a\u0000b", "a\u0007b"]
# The fields each token kind carries (README, "Kinds and their fields"); a generic body
# would be refused with 422 for a missing or foreign field before reaching the store.
KINDS = {
    "pre_auth": ["username", "challenge"],
    "oidc_state": ["provider_id", "nonce", "code_verifier"],
    "oidc_exchange": ["username"],
    "password_reset": ["username"],
    "email_otp_setup": ["username", "code_hash"],
    "download": ["username", "data"],
    "mfa_enforce": ["username", "challenge"],
}
# Plausible values by field name, so the other fields pass validation.
PLAUSIBLE = {
    "email": "nul-pass@example.com",
    "password": "nul-pass-password",
    "new_password": "nul-pass-password",
    "event": "login_ip",
    "code": "123456",
    "data": {"resource": "report.csv"},
}


def deref(spec, schema):
    """Follow local `#/components/...` references."""
    while "$ref" in schema:
        target = spec
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        schema = target
    return schema


def plausible(spec, name, schema):
    schema = deref(spec, schema)
    if name in PLAUSIBLE:
        return PLAUSIBLE[name]
    if "enum" in schema:
        return schema["enum"][0]
    types = schema.get("type", "string")
    types = [types] if isinstance(types, str) else [t for t in types if t != "null"]
    if "integer" in types:
        return 1
    if "boolean" in types:
        return True
    # Unique, so that register and the like do not just answer 409.
    return f"nul-pass-{name}-{uuid.uuid4().hex[:8]}"


def is_string(spec, schema):
    schema = deref(spec, schema)
    types = schema.get("type")
    types = [types] if isinstance(types, str) else (types or [])
    # `data` has no type (free-form JSON): a string is a valid value for it too.
    return "string" in types or not types


def body_cases(spec, path, schema):
    """Plausible bodies, each with one string field replaced by a bad value."""
    schema = deref(spec, schema)
    props = schema.get("properties", {})
    if path == "/v1/tokens":
        bases = [{"kind": kind, **{f: plausible(spec, f, props[f]) for f in fields}}
                 for kind, fields in KINDS.items()]
    else:
        bases = [{f: plausible(spec, f, props[f]) for f in schema.get("required", [])}]
    for base in bases:
        # Fields of this body plus, for a generic body, the optional ones (one at a time).
        fields = list(base) if path == "/v1/tokens" else list(props)
        for field in fields:
            if field == "kind" or not is_string(spec, props[field]):
                continue
            for bad in BAD:
                yield {**base, field: bad}


def main():
    base_url, junit_out = sys.argv[1], sys.argv[2]
    spec = requests.get(f"{base_url}/openapi.json", timeout=30).json()
    http = requests.Session()
    http.headers["Authorization"] = "Bearer schemathesis-key"
    if len(sys.argv) > 3:
        http.headers["Cookie"] = sys.argv[3]

    suite = ET.Element("testsuite", name="nul_fields")
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            cases = []  # (path, query, body)
            params = op.get("parameters", [])
            for p in params:
                if not is_string(spec, p.get("schema", {})):
                    continue
                for bad in BAD:
                    url, query = path, {}
                    for q in params:  # the other parameters plausible, this one bad
                        value = bad if q is p else "x"
                        if q["in"] == "path":
                            url = url.replace("{%s}" % q["name"], quote(value, safe=""))
                        elif q["in"] == "query":
                            query[q["name"]] = value if q is p else "/"
                    cases.append((url, query, None))
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                cases += [(path, {}, b) for b in body_cases(spec, path, body["schema"])]
            if not cases:
                continue
            name = f"{method.upper()} {path}"
            case = ET.SubElement(suite, "testcase", name=name)
            failures = []
            for url, query, payload in cases:
                try:
                    r = http.request(method, base_url + url, params=query, json=payload,
                                     timeout=15, allow_redirects=False)
                    status, text = r.status_code, r.text
                except requests.RequestException as e:
                    status, text = "no response", repr(e)
                if status == "no response" or status >= 500:
                    failures.append(
                        f"{method.upper()} {url} query={json.dumps(query)} "
                        f"body={json.dumps(payload)}\n  -> {status} {text}")
            for f in failures:
                ET.SubElement(case, "failure", message="5xx").text = f
            print(f"nul_fields: {name}: {len(cases)} requests, "
                  + ("ok" if not failures else f"{len(failures)} got 5xx:"))
            for f in failures:
                print("  " + f)
    ET.ElementTree(suite).write(junit_out, encoding="unicode")


if __name__ == "__main__":
    main()
