//! Builds the actix application from the capabilities' `configure`
//! functions, starts the background tasks, and runs until stopped.

use std::{net::TcpListener, sync::Arc};

use actix_web::{
    App, HttpMessage, HttpServer,
    dev::{Server, ServerHandle, Service},
    http::header::{HeaderName, HeaderValue},
    web,
};
use anyhow::Context;
use tokio::{sync::Notify, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing_actix_web::{RequestId, TracingLogger};

use crate::{
    admin,
    auth::{self, rate_limit::RateLimits, tokens::JwtKeys},
    cabinet,
    config::Config,
    db::Db,
    docs,
    domain::Commands,
    error,
    events::{EventStore, Tailer},
    health,
    mail::worker::MailWorker,
    realtime::{self, Hub},
    telemetry::RedactingRootSpan,
    templates::Templates,
    webhooks::{WebhookState, worker::WebhookWorker},
};

/// Shared by every request handler and worker.
pub struct AppState {
    pub config: Config,
    pub db: Db,
    pub store: EventStore,
    /// Every write goes through it.
    pub commands: Commands,
    pub tailer: Tailer,
    pub jwt: JwtKeys,
    /// Cabinet session checks, one query for those that arrive together.
    pub session_checks: crate::auth::session_checks::SessionChecks,
    pub rate_limits: RateLimits,
    pub templates: Arc<Templates>,
    /// Wakes the mail worker after a commit that queued an e-mail.
    pub mail_wake: Arc<Notify>,
    /// Publishes every event to the live WebSocket feeds.
    pub hub: Hub,
    pub webhooks: WebhookState,
    /// Integration settings, read from memory; a change reaches every
    /// instance at once.
    pub settings: crate::settings::Settings,
    pub telegram: crate::telegram::Bridge,
    /// Cancelled when the server starts stopping: long-lived connections
    /// (WebSocket feeds) end then instead of holding up the shutdown.
    pub closing: CancellationToken,
}

/// A built application: bound to its port, background tasks running.
pub struct Application {
    port: u16,
    server: Server,
    state: Arc<AppState>,
    tasks: JoinSet<()>,
    shutdown: CancellationToken,
}

impl Application {
    /// Connects to the database, runs migrations, starts the log tailer and
    /// binds the listen address (port 0 picks a free port).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        install_crypto_provider();
        crate::client_ip::trust(config.trusted_proxies.clone());
        let db = Db::connect(&config.database).await?;
        db.migrate()
            .await
            .context("cannot run database migrations")?;
        let store = EventStore::new(db.clone());
        store
            .identify()
            .await
            .context("cannot read the event log's id")?;
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let tailer = Tailer::start(
            store.clone(),
            config.tailer_poll_interval,
            &mut tasks,
            shutdown.clone(),
        )
        .await
        .context("cannot start the log tailer")?;

        crate::prometheus::install();
        let closing = CancellationToken::new();
        let hub = Hub::start(
            &tailer,
            store.clone(),
            config.realtime.queue,
            &mut tasks,
            closing.clone(),
        );

        let jwt_secret = auth::jwt_secret(&config, &db).await?;
        let jwt = JwtKeys::new(&jwt_secret, config.auth.access_token_ttl);
        let templates = Arc::new(Templates::new(config.mail.templates_dir.clone()));
        let mail_wake = Arc::new(Notify::new());
        tasks.spawn(
            MailWorker {
                db: db.clone(),
                config: config.mail.clone(),
                templates: templates.clone(),
                wake: mail_wake.clone(),
            }
            .run(shutdown.clone()),
        );

        let commands = Commands::new(store.clone());
        tasks.spawn(crate::subscriptions::run_scheduler(
            commands.clone(),
            config.subscription_check_interval,
            shutdown.clone(),
        ));

        let webhooks = WebhookState::new(&config, &db).await?;
        let settings = crate::settings::Settings::start(
            db.clone(),
            webhooks.sender.secrets().clone(),
            &config,
            &mut tasks,
            shutdown.clone(),
        )
        .await
        .context("cannot start the settings")?;
        let recorder = crate::webhooks::worker::Recorder::new(db.clone());
        tasks.spawn(
            WebhookWorker {
                db: db.clone(),
                commands: commands.clone(),
                config: config.webhooks.clone(),
                sender: webhooks.sender.clone(),
                published: tailer.watch(),
                wake: webhooks.wake.clone(),
                recorder,
            }
            .run(shutdown.clone()),
        );
        tasks.spawn(crate::webhooks::backfill::run(
            db.clone(),
            store.clone(),
            webhooks.wake.clone(),
            shutdown.clone(),
        ));

        let telegram = crate::telegram::Bridge::new(
            crate::telegram::bot_api::BotApi::configured(&config.telegram)?,
            crate::telegram::stars::payload_key(&jwt_secret),
        );
        tasks.spawn(crate::telegram::intake::run(
            crate::telegram::intake::Intake::new(
                &config,
                db.clone(),
                commands.clone(),
                &telegram,
                settings.clone(),
            ),
            telegram.updates.clone(),
            shutdown.clone(),
        ));
        let broadcasts = crate::broadcasts::worker::Worker {
            db: db.clone(),
            commands: commands.clone(),
            wake: telegram.broadcasts.clone(),
            sends: telegram.sends.clone(),
        };
        tasks.spawn(broadcasts.run(shutdown.clone()));
        let relay = crate::helpdesk::relay::Relay {
            db: db.clone(),
            commands: commands.clone(),
            settings: settings.clone(),
            policy: webhooks.sender.policy().clone(),
            wake: telegram.helpdesk.clone(),
        };
        tasks.spawn(relay.run(shutdown.clone()));
        match telegram.api.clone() {
            Some(api) => {
                if config.telegram.poll {
                    tasks.spawn(crate::telegram::poll::run(
                        db.clone(),
                        api.clone(),
                        crate::telegram::poll::long_poll(&config.telegram),
                        telegram.updates.clone(),
                        shutdown.clone(),
                    ));
                }
                let sender = crate::telegram::sender::Sender {
                    db: db.clone(),
                    commands: commands.clone(),
                    api,
                    limits: config.telegram.limits,
                    lease: crate::telegram::outbox::lease(config.telegram.api_timeout),
                    wake: telegram.sends.clone(),
                    ended: telegram.ended.clone(),
                    recorder: crate::telegram::sender::Recorder::new(db.clone(), commands.clone()),
                };
                tasks.spawn(sender.run(shutdown.clone()));
            }
            None => tracing::info!(
                "no SWITCHBOARD_TELEGRAM_BOT_TOKEN: Telegram sends wait in the outbox"
            ),
        }

        let listener = TcpListener::bind(config.listen)
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let port = listener.local_addr()?.port();
        let session_checks = crate::auth::session_checks::SessionChecks::new(db.clone());
        let state = Arc::new(AppState {
            rate_limits: RateLimits::new(config.auth.rate_per_ip, config.auth.rate_per_account),
            config,
            db,
            store,
            commands,
            tailer,
            jwt,
            session_checks,
            templates,
            mail_wake,
            hub,
            webhooks,
            settings,
            telegram,
            closing,
        });
        let server = serve(listener, state.clone())?;
        Ok(Self {
            port,
            server,
            state,
            tasks,
            shutdown,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Stops the HTTP server gracefully when called (tests; signals are
    /// handled by actix itself).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/SIGINT (or [`ServerHandle::stop`]); in-flight
    /// requests finish, then background tasks stop and the pool closes.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            port,
            server,
            state,
            mut tasks,
            shutdown,
        } = self;
        let handle = server.handle();
        let closing = state.closing.clone();
        let stop_signal = wait_for_signal();
        // Listening is announced once SIGTERM/SIGINT are ours to handle.
        tracing::info!(address = %state.config.listen.ip(), port, "listening");
        let signals = tokio::spawn(async move {
            stop_signal.await;
            tracing::info!("stop signal received; finishing in-flight requests");
            closing.cancel();
            handle.stop(true).await;
        });
        let served = server.await;
        signals.abort();
        state.closing.cancel();
        tracing::info!("HTTP server stopped; stopping background tasks");
        shutdown.cancel();
        while tasks.join_next().await.is_some() {}
        state.db.clone().close().await;
        tracing::info!("stopped");
        served.context("HTTP server failed")
    }
}

/// TLS (outgoing webhooks, SMTP, the Bot API) uses rustls with *ring*, installed once
/// per process before any HTTP client is built. Safe to call repeatedly.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Cross-origin calls from the configured origins only (none by default):
/// bearer tokens, no cookies, so never credentials.
fn cors(origins: &[String]) -> actix_cors::Cors {
    let mut cors = actix_cors::Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE"])
        .allowed_headers([
            actix_web::http::header::AUTHORIZATION,
            actix_web::http::header::CONTENT_TYPE,
            HeaderName::from_static("x-api-key"),
        ])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            actix_web::http::header::RETRY_AFTER,
        ])
        .max_age(600)
        // Another origin's request is answered without CORS headers (its
        // browser then withholds the answer), not refused: same-origin
        // requests carry `Origin` too.
        .block_on_origin_mismatch(false);
    for origin in origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}

/// The content security policy of the interactive API reference.
const DOCS_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                        img-src 'self' data:; connect-src 'self'; object-src 'none'; \
                        base-uri 'none'; frame-ancestors 'none'";

fn serve(listener: TcpListener, state: Arc<AppState>) -> anyhow::Result<Server> {
    let data = web::Data::from(state.clone());
    let workers = state.config.http_workers;
    let shutdown_timeout = state.config.shutdown_timeout.as_secs();
    let stall_limit = state.config.realtime.idle_timeout;
    let cors_origins = state.config.cors_origins.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::JsonConfig::default().error_handler(error::json_error))
            .app_data(web::QueryConfig::default().error_handler(error::query_error))
            .app_data(web::PathConfig::default().error_handler(error::path_error))
            .configure(health::configure)
            .configure(crate::prometheus::configure)
            .configure(realtime::configure_admin)
            .configure(auth::configure)
            .configure(admin::configure)
            .configure(cabinet::configure)
            .configure(docs::configure)
            .configure(crate::telegram::configure)
            .configure(crate::broadcasts::routes::configure)
            .configure(crate::helpdesk::routes::configure)
            .configure(crate::pages::configure)
            .default_service(web::to(error::not_found))
            .wrap(actix_web::middleware::from_fn(crate::validate::nul::refuse))
            // Inner to TracingLogger, which puts the request id in place.
            .wrap_fn(|req, srv| {
                let request_id = req.extensions().get::<RequestId>().copied();
                let docs = req.path().starts_with("/docs");
                let response = srv.call(req);
                async move {
                    let mut response = response.await?;
                    let headers = response.headers_mut();
                    if let Some(id) = request_id
                        && let Ok(value) = HeaderValue::from_str(&id.to_string())
                    {
                        headers.insert(HeaderName::from_static("x-request-id"), value);
                    }
                    headers.insert(
                        HeaderName::from_static("x-content-type-options"),
                        HeaderValue::from_static("nosniff"),
                    );
                    if docs {
                        // The reference's own files only; Swagger UI sets
                        // inline styles and data: images.
                        headers.insert(
                            HeaderName::from_static("content-security-policy"),
                            HeaderValue::from_static(DOCS_CSP),
                        );
                    }
                    Ok(response)
                }
            })
            .wrap(actix_web::middleware::Condition::new(
                !cors_origins.is_empty(),
                cors(&cors_origins),
            ))
            .wrap(TracingLogger::<RedactingRootSpan>::new())
    })
    .workers(workers)
    .shutdown_timeout(shutdown_timeout)
    .on_connect(move |connection, _| cut_off_stalled_peers(connection, stall_limit))
    // Signals are handled in `run_until_stopped`: actix would treat SIGINT
    // as a forced stop, and both should let in-flight requests finish.
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}

/// A peer that takes none of the data sent to it for `limit` (its receive
/// window stays closed, or nothing is acknowledged) has its connection
/// aborted by the kernel (`TCP_USER_TIMEOUT`). Without it, a WebSocket
/// client that stops reading and never closes would hold its connection
/// forever: once its socket is full, the server cannot get even a close
/// frame to it. The same limit as for a client that says nothing.
fn cut_off_stalled_peers(connection: &dyn std::any::Any, limit: std::time::Duration) {
    let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() else {
        return;
    };
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(limit)) {
        tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT on a connection");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (stream, limit);
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C). The handlers are installed when
/// this is called, not when the future is first polled.
fn wait_for_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    tracing::warn!("cannot listen for SIGTERM; only Ctrl-C stops the server");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
