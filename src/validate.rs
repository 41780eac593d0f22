//! Checks on request fields: each failure is a 422 naming the field.

use crate::error::{ApiError, Problem};

/// A syntactically valid e-mail address, trimmed and lowercased.
pub fn email(field: &str, value: &str) -> Result<String, ApiError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Problem::invalid_field(field, "is required").into());
    }
    if value.len() > 254 {
        return Err(Problem::invalid_field(field, "is longer than 254 characters").into());
    }
    if value.parse::<lettre::Address>().is_err() || !value.contains('.') {
        return Err(Problem::invalid_field(field, "is not an e-mail address").into());
    }
    Ok(value.to_lowercase())
}

/// A non-empty string of at most `max` characters, trimmed.
pub fn text(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Problem::invalid_field(field, "is required").into());
    }
    if value.chars().count() > max {
        return Err(
            Problem::invalid_field(field, format!("is longer than {max} characters")).into(),
        );
    }
    Ok(value.to_owned())
}

/// A password: any characters, but a sane length (and, for new ones, long enough).
pub fn password(field: &str, value: &str, new: bool) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(Problem::invalid_field(field, "is required").into());
    }
    if new {
        crate::auth::password::check_strength(value)
            .map_err(|reason| Problem::invalid_field(field, reason))?;
    } else if value.chars().count() > 256 {
        return Err(Problem::invalid_field(field, "is longer than 256 characters").into());
    }
    Ok(())
}

/// A supported language code for e-mails (`en` when absent or unknown).
pub fn language(value: Option<&str>) -> String {
    match value.map(|v| v.trim().to_lowercase()) {
        Some(v) if v.starts_with("ru") => "ru".to_owned(),
        _ => "en".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_and_bad_ones_name_the_field() {
        assert_eq!(
            email("email", "  Ann@Example.COM ").unwrap(),
            "ann@example.com"
        );
        for bad in ["", "ann", "ann@", "@example.com", "a b@example.com"] {
            match email("email", bad) {
                Err(ApiError::Problem(p)) => assert_eq!(p.field.as_deref(), Some("email"), "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(email("email", &format!("{}@example.com", "a".repeat(250))).is_err());
    }
}

/// Requests with U+0000 anywhere in a JSON body's strings or in a query
/// parameter are refused at the edge (422 naming the field): PostgreSQL
/// stores neither in text nor in `jsonb`, and no field of the API means it.
pub mod nul {
    use actix_web::{
        HttpMessage,
        body::{EitherBody, MessageBody},
        dev::{ServiceRequest, ServiceResponse},
        middleware::Next,
        web::BytesMut,
    };
    use futures::StreamExt;
    use serde_json::Value;

    use crate::error::{Problem, problem_response};

    /// The middleware: refuses a request with U+0000, passes the others on.
    pub async fn refuse(
        req: ServiceRequest,
        next: Next<impl MessageBody>,
    ) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
        match check(req).await {
            Ok(req) => Ok(next.call(req).await?.map_into_left_body()),
            Err((req, problem)) => Ok(req
                .into_response(problem_response(&problem))
                .map_into_right_body()),
        }
    }

    /// JSON bodies read to check, at most (the JSON extractor's own limit).
    const LIMIT: usize = 2 * 1024 * 1024;

    const DETAIL: &str = "must not contain the NUL character (U+0000)";

    /// `req` with its body put back, or the problem to answer with.
    pub async fn check(
        mut req: ServiceRequest,
    ) -> Result<ServiceRequest, (ServiceRequest, Problem)> {
        if let Some(name) = query_field(req.query_string()) {
            return Err((req, Problem::invalid_field(&name, DETAIL)));
        }
        if req.content_type() != "application/json" {
            return Ok(req);
        }
        let mut body = BytesMut::new();
        let mut payload = req.take_payload();
        let mut failed = false;
        while let Some(chunk) = payload.next().await {
            match chunk {
                Ok(chunk) if body.len() + chunk.len() <= LIMIT => body.extend_from_slice(&chunk),
                // Too large or broken: the extractor answers for it.
                _ => {
                    failed = true;
                    break;
                }
            }
        }
        let body = body.freeze();
        let field = if failed { None } else { body_field(&body) };
        let (_, mut replaced) = actix_http::h1::Payload::create(true);
        replaced.unread_data(body);
        req.set_payload(replaced.into());
        match field {
            Some(field) => Err((req, Problem::invalid_field(&field, DETAIL))),
            None => Ok(req),
        }
    }

    /// The name of the first query parameter with `%00` in it.
    fn query_field(query: &str) -> Option<String> {
        let pair = query.split('&').find(|pair| pair.contains("%00"))?;
        let name = pair.split('=').next().unwrap_or_default();
        let name = url::form_urlencoded::parse(name.as_bytes())
            .next()
            .map(|(key, _)| key.replace('\0', ""))
            .unwrap_or_default();
        Some(if name.is_empty() {
            "query".to_owned()
        } else {
            name
        })
    }

    /// The path of the first string (or key) holding U+0000, if the body is
    /// JSON that has one.
    fn body_field(body: &[u8]) -> Option<String> {
        // Only the escape can put one in a JSON string.
        if !body.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
            return None;
        }
        let value: Value = serde_json::from_slice(body).ok()?;
        find(&value, String::new())
    }

    fn find(value: &Value, path: String) -> Option<String> {
        let join = |key: &str| {
            if path.is_empty() {
                key.to_owned()
            } else {
                format!("{path}.{key}")
            }
        };
        match value {
            Value::String(s) if s.contains('\0') => Some(if path.is_empty() {
                "body".to_owned()
            } else {
                path
            }),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(n, item)| find(item, format!("{path}[{n}]"))),
            Value::Object(fields) => fields.iter().find_map(|(key, value)| {
                if key.contains('\0') {
                    Some(join(&key.replace('\0', "")))
                } else {
                    find(value, join(key))
                }
            }),
            _ => None,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_field_with_a_nul_is_named() {
            assert_eq!(body_field(br#"{"text": "a\u0000b"}"#), Some("text".into()));
            assert_eq!(
                body_field(br#"{"a": {"b": ["x", "\u0000"]}}"#),
                Some("a.b[1]".into())
            );
            assert_eq!(body_field(br#"{"text": "a\\u0000b"}"#), None);
            assert_eq!(body_field(br#"{"text": "plain"}"#), None);
            assert_eq!(query_field("page=1&status=a%00b"), Some("status".into()));
            assert_eq!(query_field("q=x"), None);
        }
    }
}
