//! A JSON extractor that answers bad bodies in the service's own problem format: 415 for a
//! body that is not JSON, 413 over the size limit, 400 for malformed JSON, 422 naming the
//! field for a missing, unknown or mistyped one.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{AppError, FieldError};

/// A JSON body of type `T`.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(AppError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                AppError::BodyTooLarge
            } else {
                AppError::MalformedJson(r.body_text())
            }
        })?;
        parse(&bytes).map(ApiJson)
    }
}

/// `application/json` or any `+json` type, with or without parameters.
pub fn is_json(value: Option<&axum::http::HeaderValue>) -> bool {
    let Some(v) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = v
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Deserialises `bytes`, naming every offending field in the error. The body is read as
/// JSON first, so that anything well-formed but wrong (including an enum given the wrong
/// type, which serde_json would otherwise report as a syntax error) is a 422 naming its
/// field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    // The common case in one pass: an object without a single escape, so without any
    // control character in it (raw ones are not JSON), that is a `T` as it stands. Anything
    // else takes the full path below, which names every offending field.
    let object = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if object
        && !bytes.contains(&b'\\')
        && let Ok(t) = serde_json::from_slice::<T>(bytes)
    {
        return Ok(t);
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| AppError::MalformedJson(e.to_string()))?;
    refuse_control_characters(&value, "")?;
    if !value.is_object() {
        return Err(AppError::field(".", "expected a JSON object"));
    }
    match attempt::<T>(value.clone()) {
        Ok(t) => Ok(t),
        Err(first) => Err(AppError::fields(every_error::<T>(value, first))),
    }
}

/// `value` as a `T`, or the first field that keeps it from being one.
fn attempt<T: DeserializeOwned>(value: Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let detail = plain(e.into_inner().to_string());
        // A missing field is reported on its parent; the message names the field.
        let named = detail.split('`').nth(1).map(str::to_owned);
        let field = match (path.as_str(), named) {
            (".", Some(f)) => f,
            (p, Some(f)) if detail.starts_with("missing field") => format!("{p}.{f}"),
            (p, _) => p.to_owned(),
        };
        FieldError { field, detail }
    })
}

/// serde's message without the Rust names in it (`expected struct IssueRequest`,
/// `untagged enum ProviderId`).
fn plain(detail: String) -> String {
    if detail.contains("untagged enum") {
        return "not one of the types this field takes (see /openapi.json)".into();
    }
    match detail.find("expected struct ") {
        Some(at) => format!("{}expected a JSON object", &detail[..at]),
        None => detail,
    }
}

/// Values tried in place of a field that is missing or invalid, so that the fields after
/// it are checked too: one of them is of the field's type.
fn stand_ins() -> [Value; 8] {
    use serde_json::json;
    [
        json!(""),
        json!("x"),
        json!(1),
        json!(0),
        json!(false),
        json!({}),
        json!([]),
        Value::Null,
    ]
}

/// Every offending field of `value`, `first` first: each one found is removed (an unknown
/// field) or stood in for (a missing or invalid one), and the body tried again; at most 32.
fn every_error<T: DeserializeOwned>(mut value: Value, first: FieldError) -> Vec<FieldError> {
    let mut errors = vec![first];
    while errors.len() < 32 {
        let last = &errors[errors.len() - 1];
        let Some((parent, key)) = slot(&mut value, &last.field) else {
            break;
        };
        if last.detail.starts_with("unknown field") {
            parent.remove(&key);
            match attempt::<T>(value.clone()) {
                Ok(_) => break,
                Err(next) => errors.push(next),
            }
            continue;
        }
        let field = last.field.clone();
        let next = stand_ins().into_iter().find_map(|candidate| {
            let mut tried = value.clone();
            let (parent, key) = slot(&mut tried, &field)?;
            parent.insert(key, candidate.clone());
            match attempt::<T>(tried) {
                Ok(_) => Some((candidate, None)),
                Err(e) if e.field != field => Some((candidate, Some(e))),
                Err(_) => None,
            }
        });
        let Some((candidate, next)) = next else { break };
        if let Some((parent, key)) = slot(&mut value, &field) {
            parent.insert(key, candidate);
        }
        match next {
            Some(e) if !errors.contains(&e) => errors.push(e),
            _ => break,
        }
    }
    errors
}

/// The object holding the field at `path` (`a`, `a.b`), and the field's name in it.
fn slot<'v>(
    value: &'v mut Value,
    path: &str,
) -> Option<(&'v mut serde_json::Map<String, Value>, String)> {
    let mut parts: Vec<&str> = path.split('.').collect();
    let key = parts.pop()?.to_owned();
    if key.is_empty() || key.contains('[') {
        return None;
    }
    let mut at = value;
    for part in parts {
        at = at.as_object_mut()?.get_mut(part)?;
    }
    Some((at.as_object_mut()?, key))
}

/// Refuses control characters in every string of a body, before any field is used: no
/// field of Tessera's API means one, a NUL cannot even be stored in a PostgreSQL text
/// column, and a line break in a name or key would forge log lines. Free-form `data` is
/// sealed as bytes, so there only NUL is refused (it stays refused everywhere, for the
/// apps that store what they read back).
fn refuse_control_characters(value: &Value, path: &str) -> Result<(), AppError> {
    let free_form = path == "data" || path.starts_with("data.");
    let bad = |s: &str| {
        if free_form {
            s.contains('\0')
        } else {
            s.chars().any(char::is_control)
        }
    };
    let at = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::String(s) if bad(s) => Err(AppError::field(
            if path.is_empty() { "." } else { path },
            "control characters (such as NUL) are not allowed here",
        )),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| refuse_control_characters(v, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            if bad(k) {
                return Err(AppError::field(
                    at(&k.escape_default().to_string()),
                    "control characters (such as NUL) are not allowed in names",
                ));
            }
            refuse_control_characters(v, &at(k))
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        kind: String,
        cost: Option<u32>,
    }

    fn field_of(json: &str) -> String {
        match parse::<Body>(json.as_bytes()) {
            Err(AppError::Validation { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(r#"{"cost": 1}"#), "kind");
        assert_eq!(field_of(r#"{"kind": "a", "nope": 1}"#), "nope");
        assert_eq!(field_of(r#"{"kind": "a", "cost": "x"}"#), "cost");
        assert_eq!(field_of(r#"{"kind": 5}"#), "kind");
        assert!(matches!(
            parse::<Body>(b"{not json"),
            Err(AppError::MalformedJson(_))
        ));
    }

    #[test]
    fn control_characters_are_refused_naming_the_field() {
        assert_eq!(field_of(r#"{"kind": "a\u0000b"}"#), "kind");
        assert_eq!(field_of(r#"{"kind": "line\nbreak"}"#), "kind");
        assert!(parse::<Body>(br#"{"kind": "tab\tless", "cost": 1}"#).is_err());
        assert!(parse::<Body>(br#"{"kind": "caf\u00e9"}"#).is_ok());
        let v: serde_json::Value = parse(br#"{"data": {"note": "two\nlines"}}"#).unwrap();
        assert_eq!(v["data"]["note"], "two\nlines");
        assert!(matches!(
            parse::<serde_json::Value>(br#"{"data": {"note": "a\u0000"}}"#),
            Err(AppError::Validation { field, .. }) if field == "data.note"
        ));
    }

    #[test]
    fn json_content_types() {
        use axum::http::HeaderValue;
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "application/problem+json",
        ] {
            assert!(is_json(Some(&HeaderValue::from_static(ok))), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ] {
            assert!(!is_json(Some(&HeaderValue::from_static(bad))), "{bad}");
        }
        assert!(!is_json(None));
    }
}
