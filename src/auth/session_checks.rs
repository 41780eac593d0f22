//! Cabinet session checks, coalesced. Every request re-checks its session,
//! so logout, revocation and blocking take effect at once; the checks of
//! requests that arrive together go to the database as one query.

use std::{collections::HashMap, sync::Arc};

use chrono::Utc;
use sea_orm::{
    ColumnTrait, DbErr, EntityTrait, JoinType, QueryFilter, QuerySelect, RelationDef,
    prelude::DateTimeUtc,
};
use uuid::Uuid;

use crate::{
    batch::{Batch, Gather},
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

/// Why a query failed, for every check it carried.
#[derive(Debug, Clone)]
struct Failure {
    unavailable: bool,
    message: String,
}

/// One check: is `session` a live cabinet session of `user`?
struct Check {
    session: SessionId,
    user: Uuid,
}

/// The checks waiting for a query.
#[derive(Clone)]
pub struct SessionChecks {
    query: Query,
    gather: Arc<Gather<Query>>,
}

/// How a query is made.
#[derive(Clone)]
struct Query {
    db: Db,
}

impl Batch for Query {
    type Item = Check;
    type Answer = Result<Option<SessionUser>, Failure>;
    type Key = ();

    async fn run(&self, checks: Vec<Check>) -> Vec<Self::Answer> {
        let sessions: Vec<Uuid> = checks.iter().map(|c| c.session.as_uuid()).collect();
        // Once more on a failure that is not an outage: a pooled connection
        // that has not been idle is used without a ping, and after a
        // database restart it fails its first statement.
        let result = match live_users(&self.db, sessions.clone()).await {
            Err(e) if !is_unavailable(&e) => live_users(&self.db, sessions).await,
            result => result,
        };
        match result {
            Ok(found) => checks
                .iter()
                .map(|check| {
                    Ok(found
                        .get(&check.session.as_uuid())
                        .filter(|user| user.id == check.user)
                        .cloned())
                })
                .collect(),
            Err(e) => {
                let failure = Failure {
                    unavailable: is_unavailable(&e),
                    message: e.to_string(),
                };
                checks.iter().map(|_| Err(failure.clone())).collect()
            }
        }
    }
}

impl SessionChecks {
    pub fn new(db: Db) -> Self {
        Self {
            query: Query { db },
            gather: Arc::new(Gather::new(MAX_CHECKS, RUNNERS)),
        }
    }

    /// The user of `session` if it is a live cabinet session of `user`.
    pub async fn user(
        &self,
        session: SessionId,
        user: Uuid,
    ) -> Result<Option<SessionUser>, ApiError> {
        let failure = match self
            .gather
            .submit(&self.query, Check { session, user })
            .await
        {
            Ok(Ok(found)) => return Ok(found),
            Ok(Err(failure)) => failure,
            Err(e) => Failure {
                unavailable: false,
                message: format!("the session check was {e}"),
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
