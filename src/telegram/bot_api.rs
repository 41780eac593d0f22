//! Calls to the Bot API (`SWITCHBOARD_TELEGRAM_API_URL`), classified by
//! what the sender does next. The typed teloxide-core client is used for
//! the Bot API's own calls (`getFile`, `setWebhook`); sends go through
//! [`BotApi::call`], which keeps the HTTP status and `retry_after` a pacer
//! needs (teloxide's client hides the status and waits 10 s on a 5xx).

use std::time::Duration;

use reqwest::multipart::{Form, Part};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use teloxide_core::ApiError;

use super::outbox::Upload;

/// What a call came to.
#[derive(Debug)]
pub enum Answer {
    /// `ok: true`, with Telegram's `result`.
    Done(Value),
    /// 429: not before this many seconds (for the chat it was for).
    RetryAfter(u64),
    /// Telegram refused it (a 4xx): not worth sending again.
    Refused {
        code: u16,
        description: String,
        /// The user blocked the bot (403 "bot was blocked by the user").
        blocked: bool,
    },
    /// Telegram could not take it now (a 5xx): it may be sent again.
    Unavailable { code: u16, description: String },
    /// The request never reached Telegram (no connection): it may be sent
    /// again.
    NotReached(String),
    /// It may have reached Telegram, but no answer came (a timeout, a
    /// connection lost midway, an answer that is not the Bot API's).
    Lost(String),
}

/// The Bot API of one bot.
#[derive(Clone)]
pub struct BotApi {
    client: reqwest::Client,
    base: url::Url,
    token: SecretString,
}

impl BotApi {
    /// The bot `token`'s API at `base`; a call's answer that takes longer
    /// than `timeout` counts as lost.
    pub fn new(base: url::Url, token: SecretString, timeout: Duration) -> anyhow::Result<Self> {
        crate::app::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            client,
            base,
            token,
        })
    }

    /// The configured bot's API (`None` without a token).
    pub fn configured(config: &crate::config::TelegramConfig) -> anyhow::Result<Option<Self>> {
        config
            .bot_token
            .as_ref()
            .map(|token| Self::new(config.api_url.clone(), token.clone(), config.api_timeout))
            .transpose()
    }

    /// The typed client for the Bot API's own calls, at the same URL.
    pub fn typed(&self) -> teloxide_core::Bot {
        teloxide_core::Bot::new(self.token.expose_secret()).set_api_url(self.base.clone())
    }

    /// `{base}/bot{token}/{method}`, as teloxide-core builds it.
    fn method_url(&self, method: &str) -> url::Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty();
            segments.push(&format!("bot{}", self.token.expose_secret()));
            segments.push(method);
        }
        url
    }

    /// Downloads a file by the `file_path` `getFile` gave:
    /// `{base}/file/bot{token}/{file_path}`. Errors never carry the URL.
    pub async fn download(&self, file_path: &str) -> Result<reqwest::Response, String> {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty();
            segments.push("file");
            segments.push(&format!("bot{}", self.token.expose_secret()));
            segments.extend(file_path.split('/').filter(|s| !s.is_empty() && *s != ".."));
        }
        self.client
            .get(url)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())
    }

    /// Calls `method` with JSON `params`. Errors never carry the URL (it
    /// holds the token).
    pub async fn call(&self, method: &str, params: &Value) -> Answer {
        self.call_with_files(method, params, Vec::new()).await
    }

    /// Calls `method` as [`BotApi::call`] does, as a multipart form when
    /// files were uploaded for it (each is the part of its parameter).
    pub async fn call_with_files(
        &self,
        method: &str,
        params: &Value,
        uploads: Vec<Upload>,
    ) -> Answer {
        let request = self.client.post(self.method_url(method));
        let request = if uploads.is_empty() {
            request.json(params)
        } else {
            match form(params, uploads) {
                Ok(form) => request.multipart(form),
                Err(e) => return Answer::NotReached(e.to_string()),
            }
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) if e.is_connect() || e.is_builder() => {
                return Answer::NotReached(e.without_url().to_string());
            }
            Err(e) => return Answer::Lost(e.without_url().to_string()),
        };
        let code = response.status().as_u16();
        let body: Value = match response.json().await {
            Ok(body) => body,
            // Not the Bot API's answer (a proxy's page, say): whether
            // Telegram got the request is not known.
            Err(e) => {
                return Answer::Lost(format!(
                    "an answer with status {code} that is not the Bot API's: {}",
                    e.without_url()
                ));
            }
        };
        classify(code, body)
    }
}

/// `params` as a multipart form: strings as they are, other values as
/// JSON (as the Bot API takes `reply_markup`), and each uploaded file as
/// the part of its parameter.
fn form(params: &Value, uploads: Vec<Upload>) -> reqwest::Result<Form> {
    let mut form = Form::new();
    for (name, value) in params.as_object().into_iter().flatten() {
        if uploads.iter().any(|u| &u.field == name) {
            continue;
        }
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        form = form.text(name.clone(), text);
    }
    for upload in uploads {
        let part = Part::bytes(upload.bytes)
            .file_name(upload.filename)
            .mime_str(&upload.content_type)?;
        form = form.part(upload.field, part);
    }
    Ok(form)
}

/// What a Bot API answer (its status and JSON body) means.
fn classify(code: u16, body: Value) -> Answer {
    if body["ok"] == Value::Bool(true) {
        return Answer::Done(body.get("result").cloned().unwrap_or(Value::Null));
    }
    let description = body["description"]
        .as_str()
        .unwrap_or("no description")
        .to_owned();
    if let Some(seconds) = body["parameters"]["retry_after"].as_u64() {
        return Answer::RetryAfter(seconds.max(1));
    }
    match code {
        429 => Answer::RetryAfter(1),
        // A gateway that gave up waiting: Telegram may have sent it.
        504 => Answer::Lost(format!("{code}: {description}")),
        500.. => Answer::Unavailable { code, description },
        // The bot's token or the API URL is wrong: not this message's fault.
        401 | 404 => {
            tracing::error!(code, %description, "the Bot API refuses the bot: check SWITCHBOARD_TELEGRAM_BOT_TOKEN and SWITCHBOARD_TELEGRAM_API_URL");
            Answer::Unavailable { code, description }
        }
        400..=499 => {
            let known: Option<ApiError> =
                serde_json::from_value(Value::String(description.clone())).ok();
            Answer::Refused {
                code,
                blocked: matches!(known, Some(ApiError::BotBlocked)),
                description,
            }
        }
        // An answer that is neither ok nor an error: not the Bot API's.
        _ => Answer::Lost(format!("an answer with status {code} that is not ok")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn answers_are_classified_by_status_and_body() {
        assert!(matches!(
            classify(200, json!({"ok": true, "result": {"message_id": 3}})),
            Answer::Done(r) if r["message_id"] == 3
        ));
        assert!(matches!(
            classify(
                429,
                json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 7", "parameters": {"retry_after": 7}})
            ),
            Answer::RetryAfter(7)
        ));
        assert!(matches!(
            classify(
                403,
                json!({"ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user"})
            ),
            Answer::Refused {
                code: 403,
                blocked: true,
                ..
            }
        ));
        assert!(matches!(
            classify(
                400,
                json!({"ok": false, "error_code": 400, "description": "Bad Request: chat not found"})
            ),
            Answer::Refused {
                code: 400,
                blocked: false,
                ..
            }
        ));
        assert!(matches!(
            classify(
                502,
                json!({"ok": false, "error_code": 502, "description": "Bad Gateway"})
            ),
            Answer::Unavailable { code: 502, .. }
        ));
    }

    #[test]
    fn the_method_url_follows_the_api_url() {
        let api = |base: &str| {
            BotApi::new(
                url::Url::parse(base).unwrap(),
                SecretString::from("1:abc"),
                Duration::from_secs(1),
            )
            .unwrap()
        };
        assert_eq!(
            api("https://api.telegram.org")
                .method_url("sendMessage")
                .as_str(),
            "https://api.telegram.org/bot1:abc/sendMessage"
        );
        assert_eq!(
            api("http://127.0.0.1:8081/tg/")
                .method_url("getMe")
                .as_str(),
            "http://127.0.0.1:8081/tg/bot1:abc/getMe"
        );
    }
}
