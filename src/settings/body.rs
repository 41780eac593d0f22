//! A JSON object read into a setting's input struct so that every failure
//! names its field: one the struct does not have, one it needs, or one of
//! the wrong type. (serde's own errors say what is wrong, not where.)

use actix_web::http::StatusCode;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde_json::{Map, Value, map::IntoIter};

use crate::error::Problem;

/// `object` as a `T`; a failure is a 422 `invalid_field` naming the field.
pub fn object<T: DeserializeOwned>(object: Map<String, Value>) -> Result<T, Problem> {
    let fields = Fields {
        entries: object.into_iter(),
        pending: None,
    };
    T::deserialize(fields).map_err(|e| match e.field {
        Some(field) => Problem::invalid_field(&field, e.message),
        None => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "Invalid request body",
        )
        .detail(e.message),
    })
}

/// What is wrong, and with which field when that is known.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct FieldError {
    field: Option<String>,
    message: String,
}

impl de::Error for FieldError {
    fn custom<T: std::fmt::Display>(message: T) -> Self {
        Self {
            field: None,
            message: message.to_string(),
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Self {
            field: Some(field.to_owned()),
            message: format!("is not a field here (the fields: {})", expected.join(", ")),
        }
    }

    fn missing_field(field: &'static str) -> Self {
        Self {
            field: Some(field.to_owned()),
            message: "is required".to_owned(),
        }
    }
}

/// The object's entries handed out as a map; an error in a value is about
/// that value's key.
struct Fields {
    entries: IntoIter,
    /// The entry whose key was read last, waiting for its value to be.
    pending: Option<(String, Value)>,
}

impl<'de> de::Deserializer<'de> for Fields {
    type Error = FieldError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        visitor.visit_map(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de> MapAccess<'de> for Fields {
    type Error = FieldError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, FieldError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        // An unknown key fails here, through `FieldError::unknown_field`.
        let name: de::value::StringDeserializer<FieldError> = key.clone().into_deserializer();
        let field = seed.deserialize(name)?;
        self.pending = Some((key, value));
        Ok(Some(field))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, FieldError> {
        let Some((key, value)) = self.pending.take() else {
            return Err(de::Error::custom("a value was asked for before its key"));
        };
        seed.deserialize(value).map_err(|e| FieldError {
            field: Some(key),
            message: e.to_string(),
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: String,
        #[serde(default)]
        on: bool,
    }

    fn read(body: Value) -> Result<Sample, Problem> {
        object(body.as_object().cloned().unwrap())
    }

    #[test]
    fn unknown_missing_and_mistyped_fields_are_named() {
        let sample = read(json!({"name": "a"})).unwrap();
        assert_eq!((sample.name.as_str(), sample.on), ("a", false));
        for (body, field, detail) in [
            (
                json!({"name": "a", "colour": 1}),
                "colour",
                "the fields: name, on",
            ),
            (json!({"on": true}), "name", "is required"),
            (
                json!({"name": "a", "on": "yes"}),
                "on",
                "expected a boolean",
            ),
            (json!({"name": 7}), "name", "expected a string"),
        ] {
            let problem = read(body.clone()).unwrap_err();
            assert_eq!(problem.code, "invalid_field", "{body}");
            assert_eq!(problem.field.as_deref(), Some(field), "{body}");
            assert!(
                problem
                    .detail
                    .as_deref()
                    .unwrap_or_default()
                    .contains(detail),
                "{body}: {problem}"
            );
        }
    }
}
