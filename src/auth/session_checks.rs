//! Cabinet session checks, coalesced. Every request re-checks its session,
//! so logout, revocation and blocking take effect at once; the checks of
//! requests that arrive together go to the database as one query.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use chrono::Utc;
use sea_orm::{
    ColumnTrait, DbErr, EntityTrait, JoinType, QueryFilter, QuerySelect, RelationDef,
    prelude::DateTimeUtc,
};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::{
    db::{
        Db,
        entities::{session, user},
        is_unavailable,
    },
    error::{ApiError, Problem},
    ids::SessionId,
};

/// Checks in one query, at most.
const MAX_CHECKS: usize = 256;

/// Queries at once, at most: while one runs, the next checks gather. A
/// second starts only while more checks wait than one query takes.
const RUNNERS: usize = 2;

/// A live session's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUser {
    pub id: Uuid,
    pub status: String,
}

type Answer = Result<Option<SessionUser>, Failure>;

/// Why a query failed, for every check it carried.
#[derive(Debug, Clone)]
struct Failure {
    unavailable: bool,
    message: String,
}

struct Waiting {
    session: SessionId,
    user: Uuid,
    reply: oneshot::Sender<Answer>,
}

#[derive(Default)]
pub struct SessionChecks {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    waiting: Vec<Waiting>,
    runners: usize,
}

impl SessionChecks {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The user of `session` if it is a live cabinet session of `user`.
    pub async fn user(
        self: &Arc<Self>,
        db: &Db,
        session: SessionId,
        user: Uuid,
    ) -> Result<Option<SessionUser>, ApiError> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut state = self.lock();
            state.waiting.push(Waiting {
                session,
                user,
                reply,
            });
            let start = state.runners == 0
                || (state.runners < RUNNERS && state.waiting.len() > state.runners * MAX_CHECKS);
            if start {
                state.runners += 1;
            }
            start
        };
        if start {
            tokio::spawn(run(db.clone(), self.clone()));
        }
        let failure = match answer.await {
            Ok(Ok(found)) => return Ok(found),
            Ok(Err(failure)) => failure,
            Err(_) => Failure {
                unavailable: false,
                message: "the session check was interrupted".into(),
            },
        };
        if failure.unavailable {
            tracing::warn!(error = %failure.message, "database unavailable");
            return Err(
                Problem::unavailable("the database is not answering; try again shortly").into(),
            );
        }
        Err(ApiError::Internal(anyhow::anyhow!(failure.message)))
    }
}

/// Answers waiting checks, a query at a time, until none are left.
async fn run(db: Db, checks: Arc<SessionChecks>) {
    let mut runner = Runner {
        checks: &checks,
        finished: false,
    };
    loop {
        let batch = {
            let mut state = checks.lock();
            if state.waiting.is_empty() {
                state.runners -= 1;
                runner.finished = true;
                return;
            }
            let take = state.waiting.len().min(MAX_CHECKS);
            state.waiting.drain(..take).collect::<Vec<_>>()
        };
        let sessions: Vec<Uuid> = batch.iter().map(|w| w.session.as_uuid()).collect();
        // Once more on a failure that is not an outage: a pooled connection
        // that has not been idle is used without a ping, and after a
        // database restart it fails its first statement.
        let result = match live_users(&db, sessions.clone()).await {
            Err(e) if !is_unavailable(&e) => live_users(&db, sessions).await,
            result => result,
        };
        match result {
            Ok(found) => {
                for waiting in batch {
                    let user = found
                        .get(&waiting.session.as_uuid())
                        .filter(|user| user.id == waiting.user)
                        .cloned();
                    let _ = waiting.reply.send(Ok(user));
                }
            }
            Err(e) => {
                let failure = Failure {
                    unavailable: is_unavailable(&e),
                    message: e.to_string(),
                };
                for waiting in batch {
                    let _ = waiting.reply.send(Err(failure.clone()));
                }
            }
        }
    }
}

/// Gives the runner's place back if it stops without finishing (a panic, or
/// its runtime stopping).
struct Runner<'a> {
    checks: &'a SessionChecks,
    finished: bool,
}

impl Drop for Runner<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let mut state = self.checks.lock();
            state.runners -= 1;
            // The last runner: the checks still waiting are answered with an
            // error (their channels close) instead of waiting for a runner
            // that only the next check would start.
            if state.runners == 0 {
                state.waiting.clear();
            }
        }
    }
}

/// The live ones of these cabinet sessions, with their users.
async fn live_users(db: &Db, sessions: Vec<Uuid>) -> Result<HashMap<Uuid, SessionUser>, DbErr> {
    let to_user: RelationDef = session::Entity::belongs_to(user::Entity)
        .from(session::Column::PrincipalId)
        .to(user::Column::Id)
        .into();
    let rows: Vec<(Uuid, Uuid, DateTimeUtc, Option<DateTimeUtc>, String)> = session::Entity::find()
        .select_only()
        .column(session::Column::Id)
        .column(session::Column::PrincipalId)
        .column(session::Column::ExpiresAt)
        .column(session::Column::RevokedAt)
        .column(user::Column::Status)
        .join(JoinType::InnerJoin, to_user)
        .filter(session::Column::Id.is_in(crate::db::padded(sessions)))
        .filter(session::Column::PrincipalKind.eq("user"))
        .into_tuple()
        .all(db.conn())
        .await?;
    let now = Utc::now();
    Ok(rows
        .into_iter()
        .filter(|(_, _, expires_at, revoked_at, _)| revoked_at.is_none() && *expires_at > now)
        .map(|(session, id, _, _, status)| (session, SessionUser { id, status }))
        .collect())
}
