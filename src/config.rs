//! Configuration: environment variables (`SWITCHBOARD_*` and `DATABASE_URL`),
//! optionally from a `.env` file, validated once at start.

use std::{net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use secrecy::SecretString;

/// Where the SQLite file lives when `DATABASE_URL` is not set.
pub const DEFAULT_SQLITE_PATH: &str = "./data/switchboard.db";

/// Everything the service reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseConfig,
    pub listen: SocketAddr,
    pub log_format: LogFormat,
    /// A `tracing` filter directive, e.g. `info` or `switchboard=debug,info`.
    pub log_filter: String,
    /// How often the log tailer polls when nothing woke it.
    pub tailer_poll_interval: Duration,
    /// How long in-flight requests get to finish after SIGTERM/SIGINT.
    pub shutdown_timeout: Duration,
    /// HTTP worker threads (default: one per core).
    pub http_workers: usize,
    pub environment: Environment,
    /// Where users reach the service (links in e-mails point here).
    pub public_url: String,
    /// The cabinet front end, if it has its own pages for e-mail links
    /// (`/verify-email`, `/reset-password`, `/forgot-password`); otherwise
    /// the links open small pages this service serves.
    pub cabinet_url: Option<String>,
    pub auth: AuthConfig,
    pub telegram: TelegramConfig,
    pub mail: MailConfig,
    /// Load balancers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Browser origins (scheme, host, port) allowed to call the API from
    /// another site; none by default.
    pub cors_origins: Vec<String>,
    /// Subscription plans on sale.
    pub plans: Vec<Plan>,
    /// How often the scheduler looks for subscriptions that ran out.
    pub subscription_check_interval: Duration,
    /// Percent of a referred user's deposits credited to the referrer.
    pub referral_percent: u32,
    /// Whether an admin's manual top-up earns the referrer a reward too
    /// (off: only money that came from a provider or Telegram Stars does).
    pub referral_on_top_ups: bool,
    pub realtime: RealtimeConfig,
    pub webhooks: WebhookConfig,
    /// The helpdesk integration's first settings (`SWITCHBOARD_HELPDESK_*`),
    /// stored at start while none are; the admin API changes them after.
    pub helpdesk: Option<crate::settings::Helpdesk>,
}

/// Webhook deliveries.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Encrypts endpoint secrets at rest (required in production).
    pub encryption_key: Option<SecretString>,
    /// Delay before each attempt; its length is the number of attempts.
    pub retry_schedule: Vec<Duration>,
    /// One HTTP request, at most.
    pub timeout: Duration,
    /// Deliveries in flight per instance.
    pub concurrency: usize,
    /// How long a claimed delivery is reserved for its worker.
    pub lease: Duration,
    /// An endpoint failing without a success for this long is disabled.
    pub disable_after: Duration,
    /// Networks deliveries may reach despite the SSRF guard.
    pub allow_networks: Vec<ipnet::IpNet>,
    /// Response bodies of attempts older than this are pruned.
    pub retention: Duration,
    /// How long a rotated secret keeps signing.
    pub rotation_grace: Duration,
    /// Event types endpoints may name besides the catalogue's: none in the
    /// service, whose every event is in it; tests and benchmarks append
    /// types of their own.
    pub extra_event_types: Vec<String>,
}

/// The live WebSocket feeds.
#[derive(Debug, Clone)]
pub struct RealtimeConfig {
    /// How often the server pings each client.
    pub ping_interval: Duration,
    /// A client heard nothing from for this long is closed.
    pub idle_timeout: Duration,
    /// Frames a client may be behind the live feed before it is closed (4008).
    pub queue: usize,
    /// Most events replayed on resume; further behind → `resync_required`.
    pub replay_limit: u64,
}

/// A subscription plan (`SWITCHBOARD_PLANS`, a JSON array).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema)]
pub struct Plan {
    pub id: String,
    pub name: String,
    /// How long one purchase or renewal lasts.
    pub days: u32,
    /// Minor units.
    pub price: i64,
    pub currency: String,
}

fn default_plans() -> Vec<Plan> {
    vec![
        Plan {
            id: "monthly".into(),
            name: "Monthly".into(),
            days: 30,
            price: 29_900,
            currency: "RUB".into(),
        },
        Plan {
            id: "yearly".into(),
            name: "Yearly".into(),
            days: 365,
            price: 299_000,
            currency: "RUB".into(),
        },
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Signs the JWTs. Required in production; in development a random one
    /// is generated and kept in the database if none is given.
    pub jwt_secret: Option<SecretString>,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// A rotated refresh token presented again within this long answers
    /// with the token that replaced it (two tabs refreshing at once);
    /// later, it ends the session.
    pub refresh_reuse_interval: Duration,
    pub email_verification_ttl: Duration,
    pub password_reset_ttl: Duration,
    /// Attempts per minute on the auth endpoints, per client IP.
    pub rate_per_ip: u32,
    /// Attempts per minute on the auth endpoints, per account.
    pub rate_per_account: u32,
}

/// Telegram's own Bot API server.
pub const TELEGRAM_API_URL: &str = "https://api.telegram.org";

#[derive(Debug, Clone)]
pub struct TelegramConfig {
    pub bot_token: Option<SecretString>,
    /// The bot's @username (without `@`): the cabinet links to the bot.
    pub bot_username: Option<String>,
    /// How old a Mini App `initData` or Login Widget payload may be.
    pub auth_max_age: Duration,
    /// Ed25519 key to check the Mini App `signature` field with (hex).
    pub mini_app_public_key: Option<[u8; 32]>,
    /// The secret Telegram sends with every update to the webhook
    /// (`X-Telegram-Bot-Api-Secret-Token`); without it the webhook is off.
    pub webhook_secret: Option<SecretString>,
    /// The Bot API server (Telegram's, or a local one).
    pub api_url: url::Url,
    /// Telegram's limits the sender keeps across every instance: the
    /// overall rate from `SWITCHBOARD_TELEGRAM_RATE` (messages per second,
    /// 0: none), one a second per private chat, twenty a minute per group.
    pub limits: crate::telegram::outbox::Limits,
    /// How long a Bot API call may take before its answer counts as lost.
    pub api_timeout: Duration,
    /// Private messages go to the user's ticket (else they are only events).
    pub support: bool,
    /// `serve` also polls Telegram for updates (`SWITCHBOARD_TELEGRAM_MODE=poll`)
    /// instead of only taking them at the webhook.
    pub poll: bool,
}

#[derive(Debug, Clone)]
pub struct MailConfig {
    /// No host: e-mails wait in the outbox (with a warning) until one is set.
    pub smtp_host: Option<String>,
    pub smtp_port: u16,
    pub smtp_username: Option<String>,
    pub smtp_password: Option<SecretString>,
    pub smtp_tls: SmtpTls,
    pub from: String,
    /// Templates here override the built-in ones, file by file.
    pub templates_dir: Option<PathBuf>,
    /// The first retry delay; each later one is four times longer (6 h at most).
    pub retry_base: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain SMTP (a local relay).
    None,
    /// STARTTLS, required.
    StartTls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseConfig {
    Sqlite { path: PathBuf },
    Postgres { url: String, max_connections: u32 },
}

/// Never prints the URL (it may hold a password).
impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite { path } => f.debug_struct("Sqlite").field("path", path).finish(),
            Self::Postgres {
                max_connections, ..
            } => f
                .debug_struct("Postgres")
                .field("url", &"[redacted]")
                .field("max_connections", max_connections)
                .finish(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// A configuration value that cannot be used; the message names the variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {variable}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub reason: String,
}

impl Config {
    /// Reads the process environment (after loading `.env` if present).
    pub fn from_env() -> Result<Self, ConfigError> {
        // A missing .env is the normal case; a malformed one is worth a warning
        // but is reported once telemetry is up, so it is returned, not printed.
        let _ = dotenvy::dotenv();
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any variable source (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        let max_connections = parse_or(&get, "SWITCHBOARD_DB_MAX_CONNECTIONS", 16u32)?;
        if max_connections == 0 {
            return Err(invalid(
                "SWITCHBOARD_DB_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }
        let database = match get("DATABASE_URL") {
            None => DatabaseConfig::Sqlite {
                path: PathBuf::from(DEFAULT_SQLITE_PATH),
            },
            Some(url) => parse_database_url(&url, max_connections)?,
        };
        // Two connections listen for good (the log's and the settings'
        // notifications from other instances), and one is needed for work.
        if matches!(database, DatabaseConfig::Postgres { .. }) && max_connections < 3 {
            return Err(invalid(
                "SWITCHBOARD_DB_MAX_CONNECTIONS",
                "must be at least 3 on PostgreSQL (two connections listen for other instances' changes)",
            ));
        }

        let listen = parse_or(
            &get,
            "SWITCHBOARD_LISTEN",
            SocketAddr::from(([127, 0, 0, 1], 8080)),
        )?;
        let log_format = match get("SWITCHBOARD_LOG_FORMAT").as_deref() {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    "SWITCHBOARD_LOG_FORMAT",
                    format!("expected `json` or `pretty`, got `{other}`"),
                ));
            }
        };
        let log_filter = get("SWITCHBOARD_LOG")
            .or_else(|| get("RUST_LOG"))
            .unwrap_or_else(|| "info".to_owned());
        let tailer_poll_interval =
            Duration::from_millis(parse_or(&get, "SWITCHBOARD_TAILER_POLL_MS", 1000u64)?);
        if tailer_poll_interval.is_zero() {
            return Err(invalid("SWITCHBOARD_TAILER_POLL_MS", "must be at least 1"));
        }
        let shutdown_timeout =
            Duration::from_secs(parse_or(&get, "SWITCHBOARD_SHUTDOWN_TIMEOUT_SECS", 30u64)?);

        let default_workers = std::thread::available_parallelism().map_or(2, usize::from);
        let http_workers = parse_or(&get, "SWITCHBOARD_HTTP_WORKERS", default_workers)?;
        if http_workers == 0 {
            return Err(invalid("SWITCHBOARD_HTTP_WORKERS", "must be at least 1"));
        }

        let environment = match get("SWITCHBOARD_ENV").as_deref() {
            None | Some("development") => Environment::Development,
            Some("production") => Environment::Production,
            Some(other) => {
                return Err(invalid(
                    "SWITCHBOARD_ENV",
                    format!("expected `development` or `production`, got `{other}`"),
                ));
            }
        };
        let public_url = get("SWITCHBOARD_PUBLIC_URL")
            .unwrap_or_else(|| format!("http://{listen}"))
            .trim_end_matches('/')
            .to_owned();
        if url::Url::parse(&public_url).is_err() {
            return Err(invalid("SWITCHBOARD_PUBLIC_URL", "not an absolute URL"));
        }

        let cabinet_url =
            get("SWITCHBOARD_CABINET_URL").map(|u| u.trim_end_matches('/').to_owned());
        if let Some(url) = &cabinet_url
            && url::Url::parse(url).is_err()
        {
            return Err(invalid("SWITCHBOARD_CABINET_URL", "not an absolute URL"));
        }

        let jwt_secret = get("SWITCHBOARD_JWT_SECRET");
        if let Some(secret) = &jwt_secret
            && secret.len() < 32
        {
            return Err(invalid(
                "SWITCHBOARD_JWT_SECRET",
                "must be at least 32 characters (e.g. `openssl rand -base64 48`)",
            ));
        }
        if jwt_secret.is_none() && environment == Environment::Production {
            return Err(invalid(
                "SWITCHBOARD_JWT_SECRET",
                "is required when SWITCHBOARD_ENV=production",
            ));
        }
        let auth = AuthConfig {
            jwt_secret: jwt_secret.map(SecretString::from),
            access_token_ttl: Duration::from_secs(parse_or(
                &get,
                "SWITCHBOARD_ACCESS_TOKEN_TTL_SECS",
                900u64,
            )?),
            refresh_token_ttl: Duration::from_secs(86_400u64.saturating_mul(parse_or(
                &get,
                "SWITCHBOARD_REFRESH_TOKEN_TTL_DAYS",
                30u64,
            )?)),
            refresh_reuse_interval: Duration::from_secs(
                parse_or(&get, "SWITCHBOARD_REFRESH_REUSE_INTERVAL_SECS", 10u64)?.min(300),
            ),
            email_verification_ttl: Duration::from_secs(86_400),
            password_reset_ttl: Duration::from_secs(3_600),
            rate_per_ip: parse_or(&get, "SWITCHBOARD_AUTH_RATE_PER_IP", 30u32)?,
            rate_per_account: parse_or(&get, "SWITCHBOARD_AUTH_RATE_PER_ACCOUNT", 10u32)?,
        };
        if auth.access_token_ttl.as_secs() < 30 || auth.access_token_ttl.as_secs() > 86_400 {
            return Err(invalid(
                "SWITCHBOARD_ACCESS_TOKEN_TTL_SECS",
                "must be between 30 and 86400",
            ));
        }
        if auth.refresh_token_ttl.as_secs() < 86_400
            || auth.refresh_token_ttl.as_secs() > 366 * 86_400
        {
            return Err(invalid(
                "SWITCHBOARD_REFRESH_TOKEN_TTL_DAYS",
                "must be between 1 and 366",
            ));
        }
        if auth.rate_per_ip == 0 || auth.rate_per_account == 0 {
            return Err(invalid(
                "SWITCHBOARD_AUTH_RATE_PER_IP",
                "rate limits must be at least 1 per minute",
            ));
        }

        let mini_app_public_key = match get("SWITCHBOARD_TELEGRAM_MINI_APP_PUBLIC_KEY") {
            None => None,
            Some(hex_key) => Some(
                hex::decode(hex_key.trim())
                    .ok()
                    .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                    .ok_or_else(|| {
                        invalid(
                            "SWITCHBOARD_TELEGRAM_MINI_APP_PUBLIC_KEY",
                            "expected 64 hex characters (an Ed25519 public key)",
                        )
                    })?,
            ),
        };
        let bot_username = get("SWITCHBOARD_TELEGRAM_BOT_USERNAME")
            .map(|name| name.trim_start_matches('@').to_owned());
        if let Some(name) = &bot_username
            && (!(5..=32).contains(&name.len())
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            return Err(invalid(
                "SWITCHBOARD_TELEGRAM_BOT_USERNAME",
                "a bot's username: 5 to 32 letters, digits or `_`",
            ));
        }
        let telegram = TelegramConfig {
            bot_token: get("SWITCHBOARD_TELEGRAM_BOT_TOKEN").map(SecretString::from),
            bot_username,
            auth_max_age: Duration::from_secs(parse_or(
                &get,
                "SWITCHBOARD_TELEGRAM_AUTH_MAX_AGE_SECS",
                86_400u64,
            )?),
            mini_app_public_key,
            webhook_secret: get("SWITCHBOARD_TELEGRAM_WEBHOOK_SECRET")
                .filter(|secret| !secret.is_empty())
                .map(SecretString::from),
            api_url: match get("SWITCHBOARD_TELEGRAM_API_URL") {
                None => url::Url::parse(TELEGRAM_API_URL)
                    .map_err(|e| invalid("SWITCHBOARD_TELEGRAM_API_URL", e.to_string()))?,
                Some(given) => url::Url::parse(given.trim_end_matches('/'))
                    .ok()
                    .filter(|url| matches!(url.scheme(), "http" | "https"))
                    .ok_or_else(|| {
                        invalid(
                            "SWITCHBOARD_TELEGRAM_API_URL",
                            "expected an http(s) URL, e.g. https://api.telegram.org",
                        )
                    })?,
            },
            limits: crate::telegram::outbox::Limits::telegram(parse_or(
                &get,
                "SWITCHBOARD_TELEGRAM_RATE",
                30u32,
            )?),
            api_timeout: {
                let seconds = parse_or(&get, "SWITCHBOARD_TELEGRAM_TIMEOUT_SECS", 15u64)?;
                if !(1..=50).contains(&seconds) {
                    return Err(invalid(
                        "SWITCHBOARD_TELEGRAM_TIMEOUT_SECS",
                        "1 to 50 (a send's lease is 60 s)",
                    ));
                }
                Duration::from_secs(seconds)
            },
            poll: match get("SWITCHBOARD_TELEGRAM_MODE").as_deref() {
                None | Some("webhook") => false,
                Some("poll") => true,
                Some(other) => {
                    return Err(invalid(
                        "SWITCHBOARD_TELEGRAM_MODE",
                        format!("expected `webhook` or `poll`, got `{other}`"),
                    ));
                }
            },
            support: match get("SWITCHBOARD_TELEGRAM_SUPPORT").as_deref() {
                None | Some("on") => true,
                Some("off") => false,
                Some(other) => {
                    return Err(invalid(
                        "SWITCHBOARD_TELEGRAM_SUPPORT",
                        format!("expected `on` or `off`, got `{other}`"),
                    ));
                }
            },
        };

        let smtp_tls = match get("SWITCHBOARD_SMTP_TLS").as_deref() {
            None | Some("starttls") => SmtpTls::StartTls,
            Some("tls") => SmtpTls::Tls,
            Some("none") => SmtpTls::None,
            Some(other) => {
                return Err(invalid(
                    "SWITCHBOARD_SMTP_TLS",
                    format!("expected `starttls`, `tls` or `none`, got `{other}`"),
                ));
            }
        };
        let default_port = match smtp_tls {
            SmtpTls::Tls => 465,
            SmtpTls::StartTls => 587,
            SmtpTls::None => 25,
        };
        let mail = MailConfig {
            smtp_host: get("SWITCHBOARD_SMTP_HOST"),
            smtp_port: parse_or(&get, "SWITCHBOARD_SMTP_PORT", default_port)?,
            smtp_username: get("SWITCHBOARD_SMTP_USERNAME"),
            smtp_password: get("SWITCHBOARD_SMTP_PASSWORD").map(SecretString::from),
            smtp_tls,
            from: get("SWITCHBOARD_MAIL_FROM")
                .unwrap_or_else(|| "Switchboard <no-reply@localhost>".to_owned()),
            templates_dir: get("SWITCHBOARD_TEMPLATES_DIR").map(PathBuf::from),
            retry_base: Duration::from_millis(parse_or(
                &get,
                "SWITCHBOARD_MAIL_RETRY_BASE_MS",
                30_000u64,
            )?),
        };
        if mail.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(invalid(
                "SWITCHBOARD_MAIL_FROM",
                "not a mailbox such as `Shop <no-reply@example.com>`",
            ));
        }

        let mut trusted_proxies = Vec::new();
        for raw in get("SWITCHBOARD_TRUSTED_PROXIES")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            trusted_proxies.push(raw.parse().map_err(|_| {
                invalid(
                    "SWITCHBOARD_TRUSTED_PROXIES",
                    format!("`{raw}` is not an IP address"),
                )
            })?);
        }

        let mut cors_origins = Vec::new();
        for raw in get("SWITCHBOARD_CORS_ORIGINS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let origin = url::Url::parse(raw)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .map(|u| u.origin().ascii_serialization())
                .filter(|origin| raw.trim_end_matches('/') == origin);
            match origin {
                Some(origin) => cors_origins.push(origin),
                None => {
                    return Err(invalid(
                        "SWITCHBOARD_CORS_ORIGINS",
                        format!(
                            "`{raw}` is not an origin: list exact origins such as \
                             `https://cabinet.example.com` (no path, no `*`)"
                        ),
                    ));
                }
            }
        }

        let plans: Vec<Plan> = match get("SWITCHBOARD_PLANS") {
            None => default_plans(),
            Some(raw) => serde_json::from_str(&raw).map_err(|e| {
                invalid(
                    "SWITCHBOARD_PLANS",
                    format!("expected a JSON array of {{id, name, days, price, currency}}: {e}"),
                )
            })?,
        };
        for plan in &plans {
            if plan.id.is_empty()
                || plan.days == 0
                || plan.days > 3660
                || plan.price <= 0
                || plan.price > 1_000_000_000_000
                || plan.currency.len() != 3
                || !plan.currency.bytes().all(|b| b.is_ascii_uppercase())
            {
                return Err(invalid(
                    "SWITCHBOARD_PLANS",
                    format!(
                        "plan `{}` needs 1..3660 days, a positive price and an ISO currency",
                        plan.id
                    ),
                ));
            }
        }
        let subscription_check_interval = Duration::from_secs(
            parse_or(&get, "SWITCHBOARD_SUBSCRIPTION_CHECK_SECS", 30u64)?.max(1),
        );
        let referral_percent = parse_or(&get, "SWITCHBOARD_REFERRAL_PERCENT", 10u32)?;
        let referral_on_top_ups = parse_or(&get, "SWITCHBOARD_REFERRAL_ON_TOP_UPS", false)?;
        if referral_percent > 100 {
            return Err(invalid(
                "SWITCHBOARD_REFERRAL_PERCENT",
                "must be between 0 and 100",
            ));
        }

        let realtime = RealtimeConfig {
            ping_interval: Duration::from_secs(parse_or(&get, "SWITCHBOARD_WS_PING_SECS", 25u64)?),
            idle_timeout: Duration::from_secs(parse_or(
                &get,
                "SWITCHBOARD_WS_IDLE_TIMEOUT_SECS",
                60u64,
            )?),
            queue: parse_or(&get, "SWITCHBOARD_WS_QUEUE", 1024usize)?,
            replay_limit: parse_or(&get, "SWITCHBOARD_WS_REPLAY_LIMIT", 10_000u64)?,
        };
        if realtime.ping_interval.is_zero() || realtime.idle_timeout <= realtime.ping_interval {
            return Err(invalid(
                "SWITCHBOARD_WS_IDLE_TIMEOUT_SECS",
                "must be longer than SWITCHBOARD_WS_PING_SECS, which must be at least 1",
            ));
        }
        if !(16..=1_000_000).contains(&realtime.queue) {
            return Err(invalid(
                "SWITCHBOARD_WS_QUEUE",
                "must be between 16 and 1000000",
            ));
        }
        if realtime.replay_limit == 0 {
            return Err(invalid("SWITCHBOARD_WS_REPLAY_LIMIT", "must be at least 1"));
        }

        let webhooks = webhook_config(&get, environment)?;
        let helpdesk = helpdesk_seed(&get)?;

        Ok(Self {
            webhooks,
            helpdesk,
            realtime,
            plans,
            subscription_check_interval,
            referral_percent,
            referral_on_top_ups,
            trusted_proxies,
            cors_origins,
            database,
            listen,
            log_format,
            log_filter,
            tailer_poll_interval,
            shutdown_timeout,
            http_workers,
            environment,
            public_url,
            cabinet_url,
            auth,
            telegram,
            mail,
        })
    }
}

/// `SWITCHBOARD_HELPDESK_*`: the helpdesk integration's first settings
/// (enabled, texts kept), stored at start while none are.
fn helpdesk_seed(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<crate::settings::Helpdesk>, ConfigError> {
    let kind = get("SWITCHBOARD_HELPDESK_KIND");
    let token = get("SWITCHBOARD_HELPDESK_TOKEN");
    let callback_secret = get("SWITCHBOARD_HELPDESK_CALLBACK_SECRET");
    let Some(url) = get("SWITCHBOARD_HELPDESK_URL") else {
        if kind.is_some() || token.is_some() || callback_secret.is_some() {
            return Err(invalid(
                "SWITCHBOARD_HELPDESK_URL",
                "is required with the other SWITCHBOARD_HELPDESK_* variables",
            ));
        }
        return Ok(None);
    };
    let Some(kind) = kind else {
        return Err(invalid(
            "SWITCHBOARD_HELPDESK_KIND",
            "is required with SWITCHBOARD_HELPDESK_URL (`webim` or `generic`)",
        ));
    };
    Ok(Some(crate::settings::Helpdesk {
        kind: kind
            .trim()
            .parse()
            .map_err(|e: String| invalid("SWITCHBOARD_HELPDESK_KIND", e))?,
        enabled: true,
        base_url: crate::settings::helpdesk::base_url(&url)
            .map_err(|e| invalid("SWITCHBOARD_HELPDESK_URL", e))?,
        access_token: token.map(SecretString::from),
        callback_secret: callback_secret.map(SecretString::from),
        department: None,
        store_text: true,
    }))
}

fn webhook_config(
    get: &impl Fn(&str) -> Option<String>,
    environment: Environment,
) -> Result<WebhookConfig, ConfigError> {
    let encryption_key = get("SWITCHBOARD_WEBHOOK_ENCRYPTION_KEY");
    if let Some(key) = &encryption_key
        && key.len() < 32
    {
        return Err(invalid(
            "SWITCHBOARD_WEBHOOK_ENCRYPTION_KEY",
            "must be at least 32 characters (e.g. `openssl rand -base64 48`)",
        ));
    }
    if encryption_key.is_none() && environment == Environment::Production {
        return Err(invalid(
            "SWITCHBOARD_WEBHOOK_ENCRYPTION_KEY",
            "is required when SWITCHBOARD_ENV=production",
        ));
    }
    let retry_schedule = match get("SWITCHBOARD_WEBHOOK_RETRY_SCHEDULE") {
        None => ["0s", "5s", "5m", "30m", "2h", "5h", "10h", "10h"]
            .iter()
            .filter_map(|d| parse_duration(d))
            .collect(),
        Some(raw) => raw
            .split(',')
            .map(|d| parse_duration(d.trim()))
            .collect::<Option<Vec<_>>>()
            .filter(|s| !s.is_empty() && s.len() <= 50)
            .ok_or_else(|| {
                invalid(
                    "SWITCHBOARD_WEBHOOK_RETRY_SCHEDULE",
                    "expected 1 to 50 comma-separated durations such as `0s,5s,5m,30m,2h`",
                )
            })?,
    };
    let timeout = Duration::from_secs(parse_or(get, "SWITCHBOARD_WEBHOOK_TIMEOUT_SECS", 15u64)?);
    if timeout.is_zero() || timeout.as_secs() > 300 {
        return Err(invalid(
            "SWITCHBOARD_WEBHOOK_TIMEOUT_SECS",
            "must be between 1 and 300",
        ));
    }
    let concurrency = parse_or(get, "SWITCHBOARD_WEBHOOK_CONCURRENCY", 256usize)?;
    if !(1..=1024).contains(&concurrency) {
        return Err(invalid(
            "SWITCHBOARD_WEBHOOK_CONCURRENCY",
            "must be between 1 and 1024",
        ));
    }
    let mut allow_networks = Vec::new();
    for raw in get("SWITCHBOARD_WEBHOOK_ALLOW_NETWORKS")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let net = raw
            .parse::<ipnet::IpNet>()
            .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                invalid(
                    "SWITCHBOARD_WEBHOOK_ALLOW_NETWORKS",
                    format!("`{raw}` is not an address or network such as 10.1.0.0/16"),
                )
            })?;
        allow_networks.push(net);
    }
    Ok(WebhookConfig {
        encryption_key: encryption_key.map(SecretString::from),
        retry_schedule,
        timeout,
        concurrency,
        // Longer than a request can take, so a lease never runs out under
        // a live worker.
        lease: timeout * 2 + Duration::from_secs(15),
        disable_after: Duration::from_secs(
            3600 * parse_or(get, "SWITCHBOARD_WEBHOOK_DISABLE_AFTER_HOURS", 120u64)?.max(1),
        ),
        allow_networks,
        retention: Duration::from_secs(
            86_400 * parse_or(get, "SWITCHBOARD_WEBHOOK_RETENTION_DAYS", 30u64)?.max(1),
        ),
        rotation_grace: Duration::from_secs(
            3600 * parse_or(get, "SWITCHBOARD_WEBHOOK_ROTATION_GRACE_HOURS", 24u64)?,
        ),
        extra_event_types: Vec::new(),
    })
}

/// `250ms`, `5s`, `5m`, `2h`, `1d`; a bare number is seconds.
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let n: u64 = number.parse().ok()?;
    let millis = match unit {
        "ms" => n,
        "" | "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(millis))
}

/// Accepts `postgres://…`, `postgresql://…`, `sqlite://path` and `sqlite:path`.
fn parse_database_url(url: &str, max_connections: u32) -> Result<DatabaseConfig, ConfigError> {
    let url = url.trim();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // Let the driver judge the rest of the URL now, so a typo is reported at
        // start with the variable's name rather than as a connection failure.
        url.parse::<sea_orm::sqlx::postgres::PgConnectOptions>()
            .map_err(|e| invalid("DATABASE_URL", format!("not a valid PostgreSQL URL: {e}")))?;
        return Ok(DatabaseConfig::Postgres {
            url: url.to_owned(),
            max_connections,
        });
    }
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() {
            return Err(invalid("DATABASE_URL", "sqlite URL has no file path"));
        }
        return Ok(DatabaseConfig::Sqlite {
            path: PathBuf::from(path),
        });
    }
    Err(invalid(
        "DATABASE_URL",
        "expected a URL starting with postgres://, postgresql:// or sqlite:",
    ))
}

fn parse_or<T>(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match get(variable) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|e| invalid(variable, format!("cannot parse `{raw}`: {e}"))),
    }
}

fn invalid(variable: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn no_configuration_gives_sqlite_on_localhost_8080() {
        let config = config(&[]).unwrap();
        assert_eq!(
            config.database,
            DatabaseConfig::Sqlite {
                path: PathBuf::from("./data/switchboard.db")
            }
        );
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.log_format, LogFormat::Pretty);
    }

    #[test]
    fn a_postgres_url_selects_postgres() {
        let config = config(&[("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/app")]).unwrap();
        assert!(matches!(config.database, DatabaseConfig::Postgres { .. }));
    }

    #[test]
    fn a_malformed_database_url_names_the_variable() {
        let err = config(&[("DATABASE_URL", "mysql://x")]).unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
        let err = config(&[("DATABASE_URL", "postgres://user@host:notaport/db")]).unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
    }

    #[test]
    fn the_bots_username_is_taken_with_or_without_its_at_and_checked() {
        let taken = config(&[("SWITCHBOARD_TELEGRAM_BOT_USERNAME", "@shop_bot")]).unwrap();
        assert_eq!(taken.telegram.bot_username.as_deref(), Some("shop_bot"));
        for bad in ["a b", "bot", "<script>"] {
            let err = config(&[("SWITCHBOARD_TELEGRAM_BOT_USERNAME", bad)]).unwrap_err();
            assert_eq!(err.variable, "SWITCHBOARD_TELEGRAM_BOT_USERNAME", "{bad}");
        }
    }

    #[test]
    fn a_bad_listen_address_or_log_format_is_refused() {
        let err = config(&[("SWITCHBOARD_LISTEN", "localhost")]).unwrap_err();
        assert_eq!(err.variable, "SWITCHBOARD_LISTEN");
        let err = config(&[("SWITCHBOARD_LOG_FORMAT", "xml")]).unwrap_err();
        assert_eq!(err.variable, "SWITCHBOARD_LOG_FORMAT");
        assert!(err.to_string().contains("xml"));
    }

    #[test]
    fn production_requires_a_long_jwt_secret_and_never_prints_it() {
        let err = config(&[("SWITCHBOARD_ENV", "production")]).unwrap_err();
        assert_eq!(err.variable, "SWITCHBOARD_JWT_SECRET");
        let err = config(&[("SWITCHBOARD_JWT_SECRET", "short")]).unwrap_err();
        assert_eq!(err.variable, "SWITCHBOARD_JWT_SECRET");
        let secret = "a-very-long-secret-that-is-at-least-32-chars";
        let config = config(&[
            ("SWITCHBOARD_ENV", "production"),
            ("SWITCHBOARD_JWT_SECRET", secret),
            ("SWITCHBOARD_SMTP_PASSWORD", "smtp-hunter2"),
            ("SWITCHBOARD_TELEGRAM_BOT_TOKEN", "123:bot-secret"),
            (
                "SWITCHBOARD_WEBHOOK_ENCRYPTION_KEY",
                "webhook-key-webhook-key-webhook-key-1",
            ),
        ])
        .unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains(secret));
        assert!(!debug.contains("webhook-key-webhook-key"));
        assert!(!debug.contains("smtp-hunter2"));
        assert!(!debug.contains("bot-secret"));
    }

    #[test]
    fn webhook_settings_parse_and_bad_values_name_their_variable() {
        let config = config(&[
            ("SWITCHBOARD_WEBHOOK_RETRY_SCHEDULE", "0s, 250ms, 5m, 2h"),
            (
                "SWITCHBOARD_WEBHOOK_ALLOW_NETWORKS",
                "127.0.0.0/8, 10.1.2.3",
            ),
        ])
        .unwrap();
        assert_eq!(
            config.webhooks.retry_schedule,
            [0, 250, 300_000, 7_200_000].map(Duration::from_millis)
        );
        assert_eq!(config.webhooks.allow_networks.len(), 2);
        let default = self::config(&[]).unwrap();
        assert_eq!(default.webhooks.retry_schedule.len(), 8);
        assert_eq!(default.webhooks.timeout, Duration::from_secs(15));
        for (variable, value) in [
            ("SWITCHBOARD_WEBHOOK_RETRY_SCHEDULE", "5 parsecs"),
            ("SWITCHBOARD_WEBHOOK_ALLOW_NETWORKS", "intranet"),
            ("SWITCHBOARD_WEBHOOK_ENCRYPTION_KEY", "short"),
        ] {
            assert_eq!(
                self::config(&[(variable, value)]).unwrap_err().variable,
                variable
            );
        }
        let err = self::config(&[
            ("SWITCHBOARD_ENV", "production"),
            (
                "SWITCHBOARD_JWT_SECRET",
                "a-very-long-secret-that-is-at-least-32-chars",
            ),
        ])
        .unwrap_err();
        assert_eq!(err.variable, "SWITCHBOARD_WEBHOOK_ENCRYPTION_KEY");
    }

    #[test]
    fn sqlite_urls_give_a_file_path() {
        let config = config(&[("DATABASE_URL", "sqlite://tmp/x.db?mode=rwc")]).unwrap();
        assert_eq!(
            config.database,
            DatabaseConfig::Sqlite {
                path: PathBuf::from("tmp/x.db")
            }
        );
    }

    #[test]
    fn helpdesk_variables_seed_the_setting_and_bad_ones_name_their_variable() {
        let seeded = config(&[
            ("SWITCHBOARD_HELPDESK_KIND", "webim"),
            (
                "SWITCHBOARD_HELPDESK_URL",
                "https://helpdesk.example.com/api",
            ),
            ("SWITCHBOARD_HELPDESK_TOKEN", "helpdesk-token-hunter2"),
        ])
        .unwrap();
        let helpdesk = seeded.helpdesk.as_ref().unwrap();
        assert_eq!(helpdesk.kind, crate::settings::HelpdeskKind::Webim);
        assert_eq!(
            helpdesk.base_url.as_str(),
            "https://helpdesk.example.com/api"
        );
        assert!(helpdesk.callback_secret.is_none());
        assert!(!format!("{seeded:?}").contains("hunter2"));
        assert!(config(&[]).unwrap().helpdesk.is_none());
        for (vars, variable) in [
            (
                &[("SWITCHBOARD_HELPDESK_TOKEN", "t")][..],
                "SWITCHBOARD_HELPDESK_URL",
            ),
            (
                &[("SWITCHBOARD_HELPDESK_URL", "https://h.example.com")][..],
                "SWITCHBOARD_HELPDESK_KIND",
            ),
            (
                &[
                    ("SWITCHBOARD_HELPDESK_URL", "https://h.example.com"),
                    ("SWITCHBOARD_HELPDESK_KIND", "zendesk"),
                ][..],
                "SWITCHBOARD_HELPDESK_KIND",
            ),
            (
                &[
                    ("SWITCHBOARD_HELPDESK_URL", "ftp://h.example.com"),
                    ("SWITCHBOARD_HELPDESK_KIND", "webim"),
                ][..],
                "SWITCHBOARD_HELPDESK_URL",
            ),
        ] {
            assert_eq!(config(vars).unwrap_err().variable, variable);
        }
    }
}
