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
