//! Every route answers only statuses its OpenAPI entry declares. Each operation of
//! `/openapi.json` gets the requests a careless or hostile client sends (no body, a body
//! that is not JSON, the wrong content type, an empty object, fields of the right types
//! with meaningless values, a cross-site Origin, an oversized body), signed in and not,
//! with and without the service key; every answer's status must be listed for it.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, header};
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use tessera_api::ApiKeys;

use common::{app_state, register, send, sign_in};

const KEY: &str = "openapi-test-key";

/// A value of the right type for every required field of `schema` (through `$ref`s).
fn filled(doc: &Value, schema: &Value) -> Value {
    let schema = match schema["$ref"].as_str() {
        Some(r) => &doc["components"]["schemas"][r.rsplit('/').next().unwrap()],
        None => schema,
    };
    if let Some(one) = schema["oneOf"].as_array().and_then(|a| a.first()) {
        return filled(doc, one);
    }
    match schema["type"].as_str() {
        Some("object") | None if schema["properties"].is_object() => {
            let mut out = Map::new();
            let required: Vec<&str> = schema["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for (name, prop) in schema["properties"].as_object().unwrap() {
                if required.contains(&name.as_str()) {
                    out.insert(name.clone(), filled(doc, prop));
                }
            }
            Value::Object(out)
        }
        Some("integer") | Some("number") => json!(1),
        Some("boolean") => json!(false),
        Some("array") => json!([]),
        _ => match schema["enum"].as_array().and_then(|e| e.first()) {
            Some(first) => first.clone(),
            None => json!("x"),
        },
    }
}

struct Probe {
    content_type: Option<&'static str>,
    body: Vec<u8>,
    origin: Option<&'static str>,
}

fn probes(filled_body: Option<Value>) -> Vec<Probe> {
    let json = Some("application/json");
    let mut out = vec![
        Probe {
            content_type: None,
            body: vec![],
            origin: None,
        },
        Probe {
            content_type: json,
            body: b"{".to_vec(),
            origin: None,
        },
        Probe {
            content_type: Some("text/plain"),
            body: b"{}".to_vec(),
            origin: None,
        },
        Probe {
            content_type: json,
            body: b"{}".to_vec(),
            origin: None,
        },
        Probe {
            content_type: json,
            body: b"{}".to_vec(),
            origin: Some("https://evil.example"),
        },
        Probe {
            content_type: json,
            body: format!("{{\"x\": \"{}\"}}", "a".repeat(100 * 1024)).into_bytes(),
            origin: None,
        },
    ];
    if let Some(b) = filled_body {
        out.push(Probe {
            content_type: json,
            body: b.to_string().into_bytes(),
            origin: None,
        });
    }
    out
}

#[tokio::test]
async fn every_route_answers_only_the_statuses_its_openapi_entry_declares() {
    let (mut state, db, _outbox) = app_state(|_| {}).await;
    state.api_keys = ApiKeys::parse(KEY);
    let doc = send(
        &state,
        Request::get("/openapi.json").body(Body::empty()).unwrap(),
    )
    .await
    .body;
    register(&state, "olive", "olive's password").await;
    let session = sign_in(&state, "olive", "olive's password").await;

    let mut checked = 0;
    let mut seen = BTreeSet::new();
    let mut undeclared = Vec::new();
    // Signing out ends the session the other probes use: it goes last.
    let mut operations: Vec<(&String, &String, &Value)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .iter()
                .map(move |(m, op)| (path, m, op))
        })
        .collect();
    operations.sort_by_key(|(path, _, _)| *path == "/auth/logout");
    {
        for (path, method, op) in operations {
            let method: Method = method.to_uppercase().parse().unwrap();
            let declared: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
            let body_schema = &op["requestBody"]["content"]["application/json"]["schema"];
            let filled_body = body_schema.is_object().then(|| filled(&doc, body_schema));
            let uri = path.replace("{name}", "nope");
            for probe in probes(filled_body) {
                for credentials in [None, Some(&session)] {
                    let mut req = Request::builder().method(method.clone()).uri(&uri);
                    if let Some(t) = probe.content_type {
                        req = req.header(header::CONTENT_TYPE, t);
                    }
                    if let Some(o) = probe.origin {
                        req = req.header(header::ORIGIN, o);
                    }
                    if let Some(cookie) = credentials {
                        req = req
                            .header(header::COOKIE, cookie.as_str())
                            .header(header::AUTHORIZATION, format!("Bearer {KEY}"));
                    }
                    let body = if method == Method::GET {
                        Body::empty()
                    } else {
                        Body::from(probe.body.clone())
                    };
                    let a = send(&state, req.body(body).unwrap()).await;
                    checked += 1;
                    seen.insert(a.status.as_u16());
                    let status = a.status.as_u16().to_string();
                    if !declared.contains(&&status) && !declared.iter().any(|d| *d == "default") {
                        undeclared.push(format!("{method} {path} → {status}: {}", a.body));
                    }
                }
            }
        }
    }
    assert!(checked > 300, "{checked} requests");
    // The probes reach the error answers they are meant to, and past them.
    for status in [200, 204, 302, 400, 401, 403, 404, 409, 413, 415, 422] {
        assert!(seen.contains(&status), "no {status} among {seen:?}");
    }
    assert!(
        undeclared.is_empty(),
        "statuses the document does not declare:\n{}",
        undeclared.join("\n")
    );
    db.finish().await;
}
