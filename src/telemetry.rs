//! Logging: `tracing` with JSON or human-readable output.

use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::LogFormat;

/// Installs the global subscriber. Safe to call more than once (later calls
/// are ignored), which keeps tests simple.
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        // Colour only on a terminal: escape codes are noise in files and pipes.
        LogFormat::Pretty => registry
            .with(
                fmt::layer()
                    .with_target(false)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())),
            )
            .try_init(),
    };
}

/// The root span of every HTTP request: like tracing-actix-web's default,
/// but the query string in `http.target` keeps only harmless values
/// (`?token=…` on WebSocket upgrades and e-mail links is a credential).
pub struct RedactingRootSpan;

/// Query parameters whose values are logged as they are.
const LOGGED_QUERY_PARAMS: &[&str] = &[
    "cursor", "type", "types", "stream", "status", "page", "limit", "per_page", "from", "to",
];

impl tracing_actix_web::RootSpanBuilder for RedactingRootSpan {
    fn on_request_start(request: &actix_web::dev::ServiceRequest) -> tracing::Span {
        use actix_web::HttpMessage;
        let request_id = request
            .extensions()
            .get::<tracing_actix_web::RequestId>()
            .map(ToString::to_string)
            .unwrap_or_default();
        let route = request
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.route = %route,
            http.target = %redacted_target(request.uri()),
            http.client_ip = %crate::client_ip::client_ip(request.peer_addr(), request.headers())
                .map(|ip| ip.to_string())
                .unwrap_or_default(),
            http.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            request_id = %request_id,
            exception.message = tracing::field::Empty,
            exception.details = tracing::field::Empty,
        )
    }

    fn on_request_end<B: actix_web::body::MessageBody>(
        span: tracing::Span,
        outcome: &Result<actix_web::dev::ServiceResponse<B>, actix_web::Error>,
    ) {
        tracing_actix_web::DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// The path and query with every value not in [`LOGGED_QUERY_PARAMS`]
/// replaced by `[redacted]`.
pub fn redacted_target(uri: &actix_web::http::Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_owned();
    };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if !LOGGED_QUERY_PARAMS.contains(&key) => format!("{key}=[redacted]"),
            Some(_) => pair.to_owned(),
            None => "[redacted]".to_owned(),
        })
        .collect();
    format!("{}?{}", uri.path(), redacted.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_query_strings_are_redacted_and_cursors_kept() {
        let uri: actix_web::http::Uri = "/ws?token=eyJsecret&cursor=1-5&key=sbk_x".parse().unwrap();
        assert_eq!(
            redacted_target(&uri),
            "/ws?token=[redacted]&cursor=1-5&key=[redacted]"
        );
        let uri: actix_web::http::Uri = "/ws?sbk_secret".parse().unwrap();
        assert_eq!(redacted_target(&uri), "/ws?[redacted]");
        let uri: actix_web::http::Uri = "/healthz".parse().unwrap();
        assert_eq!(redacted_target(&uri), "/healthz");
    }
}
