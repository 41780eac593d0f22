//! Command-line tasks besides serving: creating the first admin, printing
//! the OpenAPI document.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, bail};

use crate::{admin::accounts, auth::Role, config::Config, db::Db, error::ApiError};

/// `switchboard admin create --email … --role …`: the password comes from a
/// prompt (twice) on a terminal, or from the first line of standard input.
pub async fn create_admin(config: &Config, email: &str, role: &str) -> anyhow::Result<()> {
    let role: Role = role.parse().map_err(anyhow::Error::msg)?;
    let password = read_password()?;
    let db = Db::connect(&config.database).await?;
    db.migrate()
        .await
        .context("cannot run database migrations")?;
    let created = match accounts::create(&db, email, &password, role).await {
        Ok(created) => created,
        Err(ApiError::Problem(p)) => match p.field {
            Some(field) => bail!("{field} {}", p.detail.unwrap_or_default()),
            None if p.status.as_u16() == 409 => bail!("an admin with this e-mail already exists"),
            None => bail!("{}", p.detail.unwrap_or_else(|| p.code.to_owned())),
        },
        Err(ApiError::Internal(e)) => return Err(e),
    };
    println!(
        "created {} admin {} ({})",
        role.as_str(),
        created.email,
        created.id
    );
    db.close().await;
    Ok(())
}

fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Password again: ")?;
        if first != second {
            bail!("the passwords differ");
        }
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }
}

/// `switchboard projections rebuild`.
pub async fn rebuild_projections(config: &Config) -> anyhow::Result<()> {
    let db = Db::connect(&config.database).await?;
    db.migrate()
        .await
        .context("cannot run database migrations")?;
    let store = crate::events::EventStore::new(db.clone());
    let started = std::time::Instant::now();
    let replayed = crate::projections::rebuild::rebuild(&store).await?;
    println!(
        "rebuilt the read models from {replayed} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    db.close().await;
    Ok(())
}

/// `switchboard telegram set-webhook --url URL`: points the bot's updates at
/// this service's `/telegram/webhook`, with the webhook secret (a new one,
/// printed with how to configure it, when none is set).
pub async fn set_telegram_webhook(config: &Config, url: &str) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    use teloxide_core::{payloads::SetWebhookSetters, requests::Requester};

    let api = crate::telegram::bot_api::BotApi::configured(&config.telegram)?
        .context("set SWITCHBOARD_TELEGRAM_BOT_TOKEN first")?;
    let url = url::Url::parse(url).context("--url is not a URL")?;
    if url.scheme() != "https" {
        bail!("Telegram sends updates to https URLs only: {url}");
    }
    let (secret, generated) = match &config.telegram.webhook_secret {
        Some(secret) => (secret.expose_secret().to_owned(), false),
        None => (
            crate::auth::tokens::random_token("")
                .expose_secret()
                .to_owned(),
            true,
        ),
    };
    api.typed()
        .set_webhook(url.clone())
        .secret_token(secret.clone())
        .await
        .map_err(|e| anyhow::anyhow!("Telegram refused setWebhook: {e}"))?;
    println!("Telegram now sends the bot's updates to {url}");
    if generated {
        println!(
            "The webhook's secret is new: start the service with\n  SWITCHBOARD_TELEGRAM_WEBHOOK_SECRET={secret}\n(until then the webhook answers 404 and Telegram retries)."
        );
    }
    Ok(())
}

/// `switchboard telegram poll`: takes the bot's updates by long polling
/// and records them, until interrupted (no webhook needed).
pub async fn poll_telegram(config: &Config) -> anyhow::Result<()> {
    let api = crate::telegram::bot_api::BotApi::configured(&config.telegram)?
        .context("set SWITCHBOARD_TELEGRAM_BOT_TOKEN first")?;
    let db = Db::connect(&config.database).await?;
    db.migrate()
        .await
        .context("cannot run database migrations")?;
    let store = crate::events::EventStore::new(db.clone());
    store.identify().await?;
    let commands = crate::domain::Commands::new(store);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let jwt_secret = crate::auth::jwt_secret(config, &db).await?;
    let bridge = crate::telegram::Bridge::new(
        Some(api.clone()),
        crate::telegram::stars::payload_key(&jwt_secret),
    );
    // The helpdesk bridge's setting, for the messages it relays (a running
    // service delivers them).
    let webhooks = crate::webhooks::WebhookState::new(config, &db).await?;
    let mut tasks = tokio::task::JoinSet::new();
    let settings = crate::settings::Settings::start(
        db.clone(),
        webhooks.sender.secrets().clone(),
        config,
        &mut tasks,
        shutdown.clone(),
    )
    .await?;
    let wake = bridge.updates.clone();
    let processor = tokio::spawn(crate::telegram::intake::run(
        crate::telegram::intake::Intake::new(config, db.clone(), commands, &bridge, settings),
        wake.clone(),
        shutdown.clone(),
    ));
    let poller = tokio::spawn(crate::telegram::poll::run(
        db.clone(),
        api,
        crate::telegram::poll::long_poll(&config.telegram),
        wake,
        shutdown.clone(),
    ));
    tokio::signal::ctrl_c().await?;
    shutdown.cancel();
    let _ = tokio::join!(processor, poller);
    tasks.shutdown().await;
    db.close().await;
    Ok(())
}

/// `switchboard healthcheck`: asks `url` (plain http, as inside a
/// container) and succeeds on a 200. No runtime, no TLS: it runs every few
/// seconds beside the service.
pub fn healthcheck(url: &str) -> std::process::ExitCode {
    match ready(url) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("not ready: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether `url` answers 200 (within three seconds).
pub fn ready(url: &str) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    let url = url::Url::parse(url).context("not a URL")?;
    if url.scheme() != "http" {
        bail!("only http:// URLs are checked");
    }
    let host = url.host_str().context("the URL has no host")?;
    let address = url
        .socket_addrs(|| Some(80))?
        .into_iter()
        .next()
        .context("the host has no address")?;
    let timeout = Duration::from_secs(3);
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n",
        &url[url::Position::BeforePath..url::Position::AfterQuery]
    )?;
    let mut answer = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut answer)?;
    let status_line = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    match status_line.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        _ => bail!("{url} answered {status_line:?}"),
    }
}
