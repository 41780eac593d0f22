//! Sends the mail outbox over SMTP. Rows are claimed under a lease (several
//! instances never send the same row while the lease holds), sent outside
//! any database transaction, then marked sent or rescheduled with backoff.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use chrono::Utc;
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
    transport::smtp::authentication::Credentials,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Set,
    sea_query::{LockBehavior, LockType},
};
use secrecy::ExposeSecret;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::templates::Templates;
use crate::{
    config::{MailConfig, SmtpTls},
    db::{Backend, Db, entities::mail},
};

/// After this many failed attempts a mail is marked `failed`.
const MAX_ATTEMPTS: i32 = 8;
/// How long a claimed row is ours.
const LEASE: Duration = Duration::from_secs(120);

pub struct MailWorker {
    pub db: Db,
    pub config: MailConfig,
    pub templates: Arc<Templates>,
    pub wake: Arc<Notify>,
}

impl MailWorker {
    #[tracing::instrument(name = "mail_worker", skip_all)]
    pub async fn run(self, shutdown: CancellationToken) {
        let transport = match self.transport() {
            Ok(Some(transport)) => transport,
            Ok(None) => {
                tracing::warn!(
                    "SWITCHBOARD_SMTP_HOST is not set: e-mails wait in the outbox until it is"
                );
                return;
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot set up SMTP; e-mails wait in the outbox");
                return;
            }
        };
        let from: Mailbox = match self.config.from.parse() {
            Ok(from) => from,
            Err(e) => {
                tracing::error!(error = %e, "SWITCHBOARD_MAIL_FROM is not a mailbox");
                return;
            }
        };
        loop {
            let claimed = match self.claim().await {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot read the mail outbox");
                    Vec::new()
                }
            };
            let idle = claimed.is_empty();
            for row in claimed {
                self.deliver(&transport, &from, row).await;
            }
            if idle {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = self.wake.notified() => {}
                    // Retries fall due without a wake-up: poll often enough.
                    () = tokio::time::sleep(self.config.retry_base.min(Duration::from_secs(5))) => {}
                }
            } else if shutdown.is_cancelled() {
                return;
            }
        }
    }

    fn transport(&self) -> anyhow::Result<Option<AsyncSmtpTransport<Tokio1Executor>>> {
        let Some(host) = &self.config.smtp_host else {
            return Ok(None);
        };
        let mut builder = match self.config.smtp_tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpTls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .context("SMTP STARTTLS setup")?,
            SmtpTls::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(host).context("SMTP TLS setup")?
            }
        }
        .port(self.config.smtp_port)
        .timeout(Some(Duration::from_secs(30)));
        if let (Some(user), Some(password)) =
            (&self.config.smtp_username, &self.config.smtp_password)
        {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_owned(),
            ));
        }
        Ok(Some(builder.build()))
    }

    /// Takes up to 3 due rows under a lease (sent one after another, each
    /// within the SMTP timeout, so the lease outlasts the batch).
    async fn claim(&self) -> anyhow::Result<Vec<mail::Model>> {
        let now = Utc::now();
        let txn = self.db.begin_write().await?;
        let mut query = mail::Entity::find()
            .filter(mail::Column::Status.eq("pending"))
            .filter(mail::Column::NextAttemptAt.lte(now))
            .filter(
                Condition::any()
                    .add(mail::Column::LockedUntil.is_null())
                    .add(mail::Column::LockedUntil.lt(now)),
            )
            .order_by_asc(mail::Column::NextAttemptAt)
            .limit(3);
        if self.db.backend() == Backend::Postgres {
            query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        let rows = query.all(&*txn).await?;
        let lease_until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            let attempts = row.attempts + 1;
            let mut active: mail::ActiveModel = row.into();
            active.locked_until = Set(Some(lease_until));
            active.attempts = Set(attempts);
            claimed.push(active.update(&*txn).await?);
        }
        txn.commit().await?;
        Ok(claimed)
    }

    async fn deliver(
        &self,
        transport: &AsyncSmtpTransport<Tokio1Executor>,
        from: &Mailbox,
        row: mail::Model,
    ) {
        let result = self.send(transport, from, &row).await;
        let now = Utc::now();
        let attempts = row.attempts;
        let id = row.id;
        let mut active: mail::ActiveModel = row.into();
        active.locked_until = Set(None);
        match &result {
            Ok(()) => {
                // The context holds link tokens: keep it no longer than needed.
                active.context = Set(serde_json::Value::Null);
                active.status = Set("sent".to_owned());
                active.sent_at = Set(Some(now));
                active.last_error = Set(None);
                tracing::info!(mail = %id, "e-mail sent");
            }
            Err(e) => {
                let error = format!("{e:#}");
                if attempts >= MAX_ATTEMPTS {
                    active.context = Set(serde_json::Value::Null);
                    active.status = Set("failed".to_owned());
                    tracing::error!(mail = %id, attempts, error = %error, "e-mail failed for good");
                } else {
                    let delay = backoff(self.config.retry_base, attempts);
                    active.next_attempt_at =
                        Set(now + chrono::Duration::from_std(delay).unwrap_or_default());
                    tracing::warn!(mail = %id, attempts, retry_in_secs = delay.as_secs(), error = %error, "e-mail not sent; will retry");
                }
                active.last_error = Set(Some(error.chars().take(1000).collect()));
            }
        }
        let saved = async {
            let txn = self.db.begin_write().await?;
            active.update(&*txn).await?;
            txn.commit().await
        }
        .await;
        if let Err(e) = saved {
            tracing::warn!(mail = %id, error = %e, "cannot record the e-mail's outcome; its lease will expire and it may be sent again");
        }
    }

    async fn send(
        &self,
        transport: &AsyncSmtpTransport<Tokio1Executor>,
        from: &Mailbox,
        row: &mail::Model,
    ) -> anyhow::Result<()> {
        let rendered = self
            .templates
            .render_email(&row.template, &row.language, &row.context)?;
        let message = Message::builder()
            .from(from.clone())
            .to(row.recipient.parse().context("recipient address")?)
            .subject(rendered.subject)
            .multipart(MultiPart::alternative_plain_html(
                rendered.text,
                rendered.html,
            ))
            .context("building the message")?;
        transport.send(message).await.context("SMTP")?;
        Ok(())
    }
}

/// `base`, 4×, 16×, … (30 s, 2 min, 8 min, 32 min by default), capped at 6 h.
fn backoff(base: Duration, attempts: i32) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(10);
    (base * 4u32.pow(exponent)).min(Duration::from_secs(6 * 3600))
}
