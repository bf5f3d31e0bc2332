//! A JSON extractor that answers bad bodies in the service's own problem format: 415 for a
//! body that is not JSON, 413 over the size limit, 400 for malformed JSON, 422 naming the
//! field for a missing, unknown or mistyped one.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::AppError;

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

/// Deserialises `bytes`, naming the field in the error. The body is read as JSON first, so
/// that anything well-formed but wrong (including an enum given the wrong type, which
/// serde_json would otherwise report as a syntax error) is a 422 naming its field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| AppError::MalformedJson(e.to_string()))?;
    refuse_control_characters(&value, "")?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let detail = e.into_inner().to_string();
        // A missing field is reported on its parent; the message names the field.
        let named = detail.split('`').nth(1).map(str::to_owned);
        let field = match (path.as_str(), named) {
            (".", Some(f)) => f,
            (p, Some(f)) if detail.starts_with("missing field") => format!("{p}.{f}"),
            (p, _) => p.to_owned(),
        };
        AppError::field(field, detail)
    })
}

/// Refuses control characters in every string of a body, before any field is used: no
/// field of Tessera's API means one, a NUL cannot even be stored in a PostgreSQL text
/// column, and a line break in a name or key would forge log lines. Free-form `data` is
/// sealed as bytes, so there only NUL is refused (it stays refused everywhere, for the
/// apps that store what they read back).
fn refuse_control_characters(value: &serde_json::Value, path: &str) -> Result<(), AppError> {
    use serde_json::Value;
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
