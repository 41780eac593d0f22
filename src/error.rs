//! The one HTTP error type: every failure is answered as
//! `application/problem+json` (RFC 9457) with a stable machine-readable `code`.

use actix_web::{
    HttpRequest, HttpResponse, ResponseError,
    error::{JsonPayloadError, PathError, QueryPayloadError},
    http::{StatusCode, header},
    web,
};
use sea_orm::{DbErr, RuntimeErr, SqlErr};
use serde::Serialize;

use crate::{
    domain::{CommandError, DomainError, Refusal},
    events::AppendError,
};

/// A client-facing error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Problem(Problem),
    /// Logged with its cause chain; the client learns nothing about it.
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

/// A problem detail the client is meant to read.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(skip)]
    pub status: StatusCode,
    /// Stable, machine-readable; clients branch on this.
    pub code: &'static str,
    pub title: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request field the problem is about, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Sent as the `Retry-After` header (seconds).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.detail {
            Some(detail) => write!(f, "{}: {detail}", self.code),
            None => f.write_str(self.code),
        }
    }
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, title: &'static str) -> Self {
        Self {
            status,
            code,
            title,
            detail: None,
            field: None,
            retry_after: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", "Bad request").detail(detail)
    }

    /// A request field that fails validation (422).
    pub fn invalid_field(field: &str, detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "Invalid field",
        )
        .field(field)
        .detail(detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized").detail(detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden").detail(detail)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "Not found")
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
        )
        .detail(detail)
    }
}

impl From<Problem> for ApiError {
    fn from(problem: Problem) -> Self {
        Self::Problem(problem)
    }
}

impl From<DbErr> for ApiError {
    fn from(err: DbErr) -> Self {
        if matches!(
            err,
            DbErr::ConnectionAcquire(_) | DbErr::Conn(RuntimeErr::SqlxError(_))
        ) {
            tracing::warn!(error = %err, "database unavailable");
            return Problem::unavailable("the database is not answering; try again shortly").into();
        }
        if let Some(SqlErr::UniqueConstraintViolation(_)) = err.sql_err() {
            return Problem::new(StatusCode::CONFLICT, "conflict", "Conflict")
                .detail("this would duplicate an existing record")
                .into();
        }
        Self::Internal(anyhow::Error::new(err).context("database error"))
    }
}

impl From<AppendError> for ApiError {
    fn from(err: AppendError) -> Self {
        match err {
            AppendError::Conflict(_) => Problem::new(
                StatusCode::CONFLICT,
                "version_conflict",
                "Changed concurrently",
            )
            .detail("too many concurrent changes; reload and try again")
            .into(),
            AppendError::TooMany(_) => Problem::bad_request(err.to_string()).into(),
            AppendError::Unavailable(_) => {
                tracing::warn!(error = %err, "database unavailable");
                Problem::unavailable("the database is not answering; try again shortly").into()
            }
            AppendError::Unknown(_) => {
                tracing::error!(error = %err, "a write's outcome is unknown");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "outcome_unknown",
                    "Outcome unknown",
                )
                .detail(
                    "the connection to the database broke while this was being written: \
                     it may or may not have been recorded; look before trying again",
                )
                .into()
            }
            AppendError::Db(e) => e.into(),
            AppendError::Decode(e) => Self::Internal(anyhow::Error::new(e)),
        }
    }
}

/// The status a kind of domain refusal is answered with.
pub fn refusal_status(refusal: Refusal) -> (StatusCode, &'static str) {
    match refusal {
        Refusal::NotFound => (StatusCode::NOT_FOUND, "Not found"),
        Refusal::Conflict => (StatusCode::CONFLICT, "Refused"),
        Refusal::Invalid => (StatusCode::UNPROCESSABLE_ENTITY, "Refused"),
        Refusal::Forbidden => (StatusCode::FORBIDDEN, "Forbidden"),
    }
}

impl<E: DomainError> From<CommandError<E>> for ApiError {
    fn from(err: CommandError<E>) -> Self {
        match err {
            CommandError::Domain(e) => {
                let (status, title) = refusal_status(e.refusal());
                Problem::new(status, e.code(), title)
                    .detail(e.to_string())
                    .into()
            }
            CommandError::Append(e) => e.into(),
            CommandError::Db(e) => e.into(),
            CommandError::Internal(e) => Self::Internal(e),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Problem(p) => p.status,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let problem = match self {
            Self::Problem(p) => p.clone(),
            Self::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal server error",
                )
            }
        };
        problem_response(&problem)
    }
}

/// The body of every error response (`application/problem+json`, RFC 9457),
/// as documented in the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ProblemBody {
    /// `urn:switchboard:problem:<code>`
    #[schema(rename = "type")]
    kind: String,
    status: u16,
    /// Stable and machine-readable; see the document's description.
    code: String,
    title: String,
    detail: Option<String>,
    /// The request field the problem is about.
    field: Option<String>,
}

/// Renders a problem as `application/problem+json`.
pub fn problem_response(problem: &Problem) -> HttpResponse {
    #[derive(Serialize)]
    struct Body<'a> {
        #[serde(rename = "type")]
        kind: String,
        status: u16,
        #[serde(flatten)]
        problem: &'a Problem,
    }
    let body = Body {
        kind: format!("urn:switchboard:problem:{}", problem.code),
        status: problem.status.as_u16(),
        problem,
    };
    let mut response = HttpResponse::build(problem.status);
    response.insert_header((header::CONTENT_TYPE, "application/problem+json"));
    if let Some(seconds) = problem.retry_after {
        response.insert_header((header::RETRY_AFTER, seconds.to_string()));
    } else if problem.status == StatusCode::SERVICE_UNAVAILABLE {
        response.insert_header((header::RETRY_AFTER, "1"));
    }
    if problem.status == StatusCode::UNAUTHORIZED {
        response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
    }
    response.body(serde_json::to_string(&body).unwrap_or_default())
}

/// Malformed JSON bodies: 400 (syntax) or 422 (right syntax, wrong shape).
pub fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let problem = match &err {
        JsonPayloadError::ContentType => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Unsupported media type",
        )
        .detail("send the body as application/json"),
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
            )
            .detail(err.to_string())
        }
        JsonPayloadError::Deserialize(e) if e.is_data() => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "Invalid request body",
        )
        .detail(e.to_string()),
        _ => Problem::new(StatusCode::BAD_REQUEST, "malformed_json", "Malformed JSON")
            .detail(err.to_string()),
    };
    ApiError::from(problem).into()
}

/// A JSON body that may be left out altogether: `None` when the request
/// has no body; a body that is there is read as [`web::Json`] reads it,
/// its errors included (so a misspelled field is a 422, not the default).
pub struct OptionalJson<T>(pub Option<T>);

impl<T: serde::de::DeserializeOwned + 'static> actix_web::FromRequest for OptionalJson<T> {
    type Error = actix_web::Error;
    type Future = futures::future::LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let headers = req.headers();
        let no_body = !headers.contains_key(header::TRANSFER_ENCODING)
            && headers
                .get(header::CONTENT_LENGTH)
                .is_none_or(|length| length.as_bytes() == b"0");
        if no_body {
            return Box::pin(std::future::ready(Ok(Self(None))));
        }
        let json = web::Json::<T>::from_request(req, payload);
        Box::pin(async move { Ok(Self(Some(json.await?.into_inner()))) })
    }
}

pub fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::from(
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "Invalid query string",
        )
        .detail(err.to_string()),
    )
    .into()
}

/// A path whose id is not one: nothing by that id exists (404, "no such
/// ticket").
pub fn path_error(_err: PathError, req: &HttpRequest) -> actix_web::Error {
    ApiError::from(Problem::not_found().detail(format!("no such {}", path_noun(req)))).into()
}

/// What the malformed id in a route's path names: the literal segment
/// before the first parameter that is not an id (`/tickets/{id}` → ticket).
fn path_noun(req: &HttpRequest) -> String {
    let pattern = req.match_pattern().unwrap_or_default();
    let mut noun = "";
    for segment in pattern.split('/') {
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => {
                let value = req.match_info().get(name).unwrap_or_default();
                if value.parse::<uuid::Uuid>().is_err() {
                    break;
                }
            }
            None => noun = segment,
        }
    }
    let noun = match noun.strip_suffix("ies") {
        Some(stem) => format!("{stem}y"),
        None => noun.strip_suffix('s').unwrap_or(noun).to_owned(),
    }
    .replace('-', " ");
    if noun.is_empty() {
        "resource".to_owned()
    } else {
        noun
    }
}

/// For routes that do not exist.
pub async fn not_found() -> HttpResponse {
    problem_response(&Problem::not_found().detail("no such route"))
}
