//! `LISTEN` on a PostgreSQL channel for as long as the process runs. A lost
//! connection is re-established, and said so: notifications sent while
//! nobody listened are lost, so whatever they would have told must be
//! looked at anew.

use std::time::Duration;

use sea_orm::sqlx::{self, PgPool, postgres::PgListener};
use tokio_util::sync::CancellationToken;

/// What a listener hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard<'a> {
    /// Listening, for the first time or again after the connection was
    /// lost: anything notified before may have been missed.
    Listening,
    /// One notification's payload.
    Notification(&'a str),
}

/// Listens on `channel` until `shutdown` is cancelled, handing everything
/// heard to `on` (which must not block: it runs on the listener's task).
pub async fn listen(
    pool: PgPool,
    channel: &'static str,
    shutdown: CancellationToken,
    mut on: impl FnMut(Heard<'_>),
) {
    loop {
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(channel).await?;
            on(Heard::Listening);
            loop {
                match listener.try_recv().await? {
                    Some(notification) => on(Heard::Notification(notification.payload())),
                    // The connection dropped and was re-established.
                    None => {
                        tracing::debug!(channel, "LISTEN connection re-established");
                        on(Heard::Listening);
                    }
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            result = connected => {
                if let Err(e) = result {
                    tracing::warn!(channel, error = %e, "LISTEN connection lost; reconnecting");
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
