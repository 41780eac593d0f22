//! The pages people work in, served by the binary: the admin dashboard
//! (`/admin`), the cabinet's support chat (`/cabinet`, also a Telegram Mini
//! App) and the pages the e-mailed links open. Each is a template shell;
//! its script (from `/assets/`) does the rest through the API with the
//! caller's own token, so a page holds no data and needs no session of
//! its own.

use actix_web::{HttpRequest, HttpResponse, get, http::header, web};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::{
    app::AppState,
    error::{ApiError, Problem},
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(root)
        .service(admin)
        .service(cabinet)
        .service(asset);
}

/// Who may show a page inside a frame of theirs.
#[derive(Clone, Copy)]
pub enum Framing {
    Nobody,
    /// Telegram's web clients, which show a Mini App in a frame.
    Telegram,
}

/// A page's HTML with the headers every page has: only its own scripts
/// and styles run, it talks to this origin only, and nothing is cached.
pub fn html(
    state: &AppState,
    name: &str,
    context: &Value,
    framing: Framing,
) -> Result<HttpResponse, ApiError> {
    let html = state.templates.render_page(name, context)?;
    let frame_ancestors = match framing {
        Framing::Nobody => "'none'",
        Framing::Telegram => "https://web.telegram.org",
    };
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        // The e-mailed links carry their token in the URL.
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            format!(
                "default-src 'none'; script-src 'self'; style-src 'self'; \
                 img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; \
                 form-action 'self'; frame-ancestors {frame_ancestors}"
            ),
        ))
        .body(html))
}

/// `/` is the dashboard.
#[get("/")]
async fn root() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, "/admin"))
        .finish()
}

/// The admin dashboard: sign-in, live feed, tickets, users, webhooks,
/// broadcasts, API keys and stats.
#[get("/admin")]
async fn admin(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    html(&state, "admin", &json!({}), Framing::Nobody)
}

/// The cabinet: a user's support chat, balance and subscription; signs in
/// as a Telegram Mini App, through the Login Widget's redirect, or by e-mail.
#[get("/cabinet")]
async fn cabinet(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    // The bot's id is the part of its token before the colon; the Login
    // Widget's link names the bot by it.
    let bot_id = state
        .config
        .telegram
        .bot_token
        .as_ref()
        .and_then(|token| token.expose_secret().split_once(':'))
        .and_then(|(id, _)| id.parse::<u64>().ok());
    html(
        &state,
        "cabinet",
        &json!({"bot_id": bot_id, "bot_username": state.config.telegram.bot_username}),
        Framing::Telegram,
    )
}

/// The pages' scripts and styles. Linked with their version (`?v=`), so
/// they are cached for good; without it, revalidated every time.
#[get("/assets/{name}")]
async fn asset(
    state: web::Data<AppState>,
    name: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let Some(asset) = state.templates.asset(&name) else {
        return Err(Problem::not_found().detail("no such file").into());
    };
    let versioned =
        web::Query::<std::collections::HashMap<String, String>>::from_query(request.query_string())
            .is_ok_and(|query| query.get("v") == Some(&asset.version));
    let cache = if versioned {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let etag = format!("\"{}\"", asset.version);
    let unchanged = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    if unchanged {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::CACHE_CONTROL, cache))
            .insert_header((header::ETAG, etag))
            .finish());
    }
    Ok(HttpResponse::Ok()
        .content_type(asset.content_type)
        .insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::ETAG, etag))
        .body(asset.body))
}
