//! `GET /api/v1/admin/telegram/files/{file_id}`: a file a user sent the bot
//! (a photo, a document…), fetched from Telegram (`getFile`, then the
//! file's download URL) and passed through to an operator with
//! `tickets:read`. Files are never served publicly, and the bot's token
//! (part of Telegram's download URL) never leaves the service.

use actix_web::{HttpResponse, get, http::StatusCode, web};
use futures::TryStreamExt;
use serde_json::json;

use super::bot_api::Answer;
use crate::{
    app::AppState,
    auth::{CurrentAdmin, Permission},
    error::{ApiError, Problem},
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(file);
}

fn bad_gateway(detail: &str) -> ApiError {
    Problem::new(
        StatusCode::BAD_GATEWAY,
        "bad_gateway",
        "Telegram did not give the file",
    )
    .detail(detail.to_owned())
    .into()
}

/// A file a user sent, by its Telegram `file_id` (as in
/// `telegram.message_received`'s `media`), streamed from Telegram.
#[utoipa::path(tag = "telegram", params(("file_id" = String, Path, description = "a Telegram file id")), responses((status = 200, content_type = "application/octet-stream", description = "the file, with Telegram's content type"), (status = 401), (status = 403), (status = 404, description = "Telegram knows no such file (or it is over the Bot API's 20 MB)"), (status = 502), (status = 503, description = "no bot token is configured")), security(("bearer" = []), ("api_key" = [])))]
#[get("/telegram/files/{file_id}")]
#[tracing::instrument(skip_all)]
pub async fn file(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    file_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::TicketsRead)?;
    let file_id = file_id.into_inner();
    if file_id.is_empty()
        || file_id.len() > 256
        || !file_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(Problem::not_found().detail("no such file").into());
    }
    let Some(api) = &state.telegram.api else {
        return Err(
            Problem::unavailable("no bot is configured (SWITCHBOARD_TELEGRAM_BOT_TOKEN)").into(),
        );
    };
    let path = match api.call("getFile", &json!({"file_id": file_id})).await {
        Answer::Done(file) => file["file_path"].as_str().map(str::to_owned),
        Answer::Refused { code: 400, .. } => {
            return Err(Problem::not_found()
                .detail("Telegram knows no such file")
                .into());
        }
        _ => return Err(bad_gateway("Telegram did not answer getFile; try again")),
    };
    let Some(path) = path else {
        return Err(Problem::not_found()
            .detail("Telegram gives no download for this file (over 20 MB?)")
            .into());
    };
    let download = api
        .download(&path)
        .await
        .map_err(|e| bad_gateway(&format!("the download failed: {e}")))?;
    if !download.status().is_success() {
        return Err(bad_gateway(&format!(
            "the download answered {}",
            download.status().as_u16()
        )));
    }
    let content_type = download
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let name = path.rsplit('/').next().unwrap_or("file").to_owned();
    let body = download
        .bytes_stream()
        .map_err(|e| actix_web::error::ErrorBadGateway(e.without_url()));
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((
            "content-disposition",
            // Never shown inline: a user's HTML file must not run as the
            // dashboard's page.
            format!("attachment; filename=\"{}\"", name.replace('"', "")),
        ))
        .insert_header(("cache-control", "private, max-age=3600"))
        .streaming(body))
}
