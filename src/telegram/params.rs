//! A sender API call's parameters as the Bot API takes them: a JSON
//! object, or a `multipart/form-data` form whose file parts are uploads
//! (each parameter naming one holds [`Upload::marker`]).

use actix_multipart::Multipart;
use actix_web::{FromRequest, HttpMessage, HttpRequest, http::StatusCode, mime, web};
use futures::{StreamExt, future::LocalBoxFuture};
use serde_json::{Map, Value};

use super::outbox::Upload;
use crate::error::{ApiError, Problem};

/// The most a file may weigh: the Bot API's limit for uploads.
const MAX_FILE: usize = 50 * 1024 * 1024;
/// The most a photo may weigh (the Bot API's limit for photos).
const MAX_PHOTO: usize = 10 * 1024 * 1024;
/// The most the form's text fields may weigh, together.
const MAX_TEXT: usize = 1024 * 1024;

/// The parameters, and the files uploaded with them.
pub struct BotParams {
    pub params: Value,
    pub uploads: Vec<Upload>,
}

impl FromRequest for BotParams {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let multipart = req
            .mime_type()
            .ok()
            .flatten()
            .is_some_and(|m| m.type_() == mime::MULTIPART && m.subtype() == mime::FORM_DATA);
        if multipart {
            let form = Multipart::new(req.headers(), payload.take());
            return Box::pin(async move { Ok(read_form(form).await?) });
        }
        let json = web::Json::<Value>::from_request(req, payload);
        Box::pin(async move {
            Ok(Self {
                params: json.await?.into_inner(),
                uploads: Vec::new(),
            })
        })
    }
}

fn malformed(detail: impl Into<String>) -> ApiError {
    Problem::new(StatusCode::BAD_REQUEST, "malformed_form", "Malformed form")
        .detail(detail)
        .into()
}

fn too_large(detail: impl Into<String>) -> ApiError {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "Payload too large",
    )
    .detail(detail)
    .into()
}

/// Reads a form: text fields as strings, file parts (those with a file
/// name) as uploads, each within the Bot API's limits.
async fn read_form(mut form: Multipart) -> Result<BotParams, ApiError> {
    let mut params = Map::new();
    let mut uploads: Vec<Upload> = Vec::new();
    let mut text_size = 0;
    while let Some(field) = form.next().await {
        let mut field = field.map_err(|e| malformed(e.to_string()))?;
        let name = field
            .name()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| malformed("every part needs a name"))?
            .to_owned();
        let filename = field
            .content_disposition()
            .and_then(|d| d.get_filename())
            .map(str::to_owned);
        let content_type = field
            .content_type()
            .map_or("application/octet-stream".to_owned(), ToString::to_string);
        if params.contains_key(&name) {
            return Err(Problem::invalid_field(&name, "given twice").into());
        }
        let limit = match (&filename, name.as_str()) {
            (None, _) => MAX_TEXT - text_size,
            (Some(_), "photo") => MAX_PHOTO,
            (Some(_), _) => MAX_FILE,
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| malformed(e.to_string()))?;
            if bytes.len() + chunk.len() > limit {
                return Err(too_large(match filename {
                    None => format!("the form's text fields are over {MAX_TEXT} bytes"),
                    Some(_) => format!("`{name}` is over the Bot API's {limit} bytes"),
                }));
            }
            bytes.extend_from_slice(&chunk);
        }
        match filename {
            None => {
                text_size += bytes.len();
                let text = String::from_utf8(bytes)
                    .map_err(|_| Problem::invalid_field(&name, "not UTF-8 text"))?;
                params.insert(name, Value::String(text));
            }
            Some(filename) => {
                if bytes.is_empty() {
                    return Err(Problem::invalid_field(&name, "the file is empty").into());
                }
                params.insert(name.clone(), Value::String(Upload::marker(&name)));
                uploads.push(Upload {
                    field: name,
                    filename,
                    content_type,
                    bytes,
                });
            }
        }
    }
    Ok(BotParams {
        params: Value::Object(params),
        uploads,
    })
}
