//! Runs user commands: load the stream, decide, append (with the read model)
//! in the caller's transaction.

use actix_web::http::StatusCode;
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};

use super::domain::{UserCommand, UserError, UserEvent, UserState, decide};
use crate::{
    db::{WriteTxn, entities::user},
    error::{ApiError, Problem},
    events::{Actor, AppendError, EventStore, ExpectedVersion, RecordedEvent},
    ids::UserId,
};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Domain(#[from] UserError),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    Db(#[from] DbErr),
}

impl From<CommandError> for ApiError {
    fn from(err: CommandError) -> Self {
        match err {
            CommandError::Domain(UserError::AlreadyExists) => {
                Problem::new(StatusCode::CONFLICT, "user_exists", "User exists")
                    .detail(err.to_string())
                    .into()
            }
            CommandError::Domain(UserError::NotFound) => {
                Problem::not_found().detail("no such user").into()
            }
            CommandError::Domain(UserError::NoEmail) => {
                Problem::invalid_field("email", err.to_string()).into()
            }
            CommandError::Append(e) => e.into(),
            CommandError::Db(e) => e.into(),
        }
    }
}

/// Decides `command` against the user's current state and appends the
/// result within `txn`.
pub async fn execute(
    store: &EventStore,
    txn: &WriteTxn,
    user: UserId,
    command: UserCommand,
    actor: Actor,
) -> Result<Vec<RecordedEvent>, CommandError> {
    let stream = UserEvent::stream(user);
    let history = store.read_stream_in(&**txn, &stream).await?;
    let events: Vec<UserEvent> = history
        .iter()
        .filter_map(UserEvent::from_recorded)
        .collect();
    let state = UserState::from_events(&events);
    let expected = match history.last() {
        Some(last) => ExpectedVersion::Exact(last.version),
        None => ExpectedVersion::NoStream,
    };
    let decided = decide(user, &state, command)?;
    if decided.is_empty() {
        return Ok(Vec::new());
    }
    let new_events = decided
        .iter()
        .map(|e| e.to_new_event(actor.clone()))
        .collect();
    Ok(store.append_in(txn, &stream, expected, new_events).await?)
}

pub async fn find_by_telegram_id(
    conn: &impl ConnectionTrait,
    telegram_id: i64,
) -> Result<Option<user::Model>, DbErr> {
    user::Entity::find()
        .filter(user::Column::TelegramId.eq(telegram_id))
        .one(conn)
        .await
}

pub async fn find_by_email(
    conn: &impl ConnectionTrait,
    email: &str,
) -> Result<Option<user::Model>, DbErr> {
    user::Entity::find()
        .filter(user::Column::Email.eq(email))
        .one(conn)
        .await
}
