//! Referrals: a user created with someone's code is registered as their
//! referee (`referral.registered`); a share of each of the referee's
//! deposits is credited to the referrer (`referral.reward_granted` and a
//! `referral_reward` ledger entry), in the deposit's transaction.

use actix_web::{HttpResponse, get, web};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    app::AppState,
    auth::CabinetUser,
    db::{
        WriteTxn,
        entities::{transaction, user},
    },
    domain::{Aggregate, CommandError, DomainError, DomainEvent, execute},
    error::{ApiError, Problem},
    events::{Actor, EventStore},
    ids::{PaymentId, TransactionId, UserId},
    ledger::domain::{Amount, Balance, Currency, Entry, TransactionKind},
};

/// The referrer named by a code, if the code is one.
pub async fn referrer(
    conn: &impl ConnectionTrait,
    code: Option<&str>,
) -> Result<Option<UserId>, DbErr> {
    let Some(code) = code
        .map(str::trim)
        .filter(|c| !c.is_empty() && c.len() <= 64)
    else {
        return Ok(None);
    };
    Ok(user::Entity::find()
        .filter(user::Column::ReferralCode.eq(code))
        .one(conn)
        .await?
        .map(|u| UserId::from_uuid(u.id)))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum ReferralEvent {
    #[serde(rename = "referral.registered")]
    Registered {
        referrer_id: UserId,
        referee_id: UserId,
    },
    #[serde(rename = "referral.reward_granted")]
    RewardGranted {
        referrer_id: UserId,
        referee_id: UserId,
        payment_id: PaymentId,
        amount: i64,
        currency: String,
        percent: u32,
    },
}

impl DomainEvent for ReferralEvent {}

#[derive(Debug, Clone)]
pub enum ReferralCommand {
    Register {
        referrer_id: UserId,
        referee_id: UserId,
    },
    Reward {
        referrer_id: UserId,
        referee_id: UserId,
        payment_id: PaymentId,
        amount: i64,
        currency: String,
        percent: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferralError {
    #[error("users cannot refer themselves")]
    SelfReferral,
}

impl DomainError for ReferralError {
    fn status(&self) -> actix_web::http::StatusCode {
        actix_web::http::StatusCode::UNPROCESSABLE_ENTITY
    }

    fn code(&self) -> &'static str {
        "self_referral"
    }
}

/// One referrer's referees and the payments already rewarded.
#[derive(Debug, Clone, Default)]
pub struct Referrals {
    pub referees: Vec<UserId>,
    pub rewarded: Vec<PaymentId>,
}

impl Aggregate for Referrals {
    const CATEGORY: &'static str = "referral";
    type Event = ReferralEvent;
    type Command = ReferralCommand;
    type Error = ReferralError;

    fn apply(&mut self, event: &ReferralEvent) {
        match event {
            ReferralEvent::Registered { referee_id, .. } => self.referees.push(*referee_id),
            ReferralEvent::RewardGranted { payment_id, .. } => self.rewarded.push(*payment_id),
        }
    }

    fn decide(&self, command: ReferralCommand) -> Result<Vec<ReferralEvent>, ReferralError> {
        match command {
            ReferralCommand::Register {
                referrer_id,
                referee_id,
            } => {
                if referrer_id == referee_id {
                    return Err(ReferralError::SelfReferral);
                }
                Ok(if self.referees.contains(&referee_id) {
                    Vec::new()
                } else {
                    vec![ReferralEvent::Registered {
                        referrer_id,
                        referee_id,
                    }]
                })
            }
            ReferralCommand::Reward {
                referrer_id,
                referee_id,
                payment_id,
                amount,
                currency,
                percent,
            } => {
                // Once per payment, and never for nothing.
                Ok(if self.rewarded.contains(&payment_id) || amount <= 0 {
                    Vec::new()
                } else {
                    vec![ReferralEvent::RewardGranted {
                        referrer_id,
                        referee_id,
                        payment_id,
                        amount,
                        currency,
                        percent,
                    }]
                })
            }
        }
    }
}

/// Records a new user's referrer (in the user's creating transaction).
pub async fn register(
    store: &EventStore,
    txn: &WriteTxn,
    referrer_id: UserId,
    referee_id: UserId,
) -> Result<(), ApiError> {
    execute::<Referrals>(
        store,
        txn,
        referrer_id,
        ReferralCommand::Register {
            referrer_id,
            referee_id,
        },
        Actor::system(),
    )
    .await?;
    Ok(())
}

/// Credits the referrer's share of a deposit (in the deposit's transaction).
/// Returns a conflict error when it must be retried with the deposit.
pub async fn reward(
    store: &EventStore,
    txn: &WriteTxn,
    referee_id: UserId,
    payment_id: PaymentId,
    deposit: Amount,
    currency: &Currency,
    percent: u32,
) -> Result<(), CommandError<ReferralError>> {
    let Some(referee) = user::Entity::find_by_id(referee_id.as_uuid())
        .one(&**txn)
        .await?
    else {
        return Ok(());
    };
    let Some(referrer_id) = referee.referred_by.and_then(|r| r.parse::<UserId>().ok()) else {
        return Ok(());
    };
    let share = deposit.get().saturating_mul(i64::from(percent)) / 100;
    let Ok(share_amount) = Amount::parse(share) else {
        return Ok(());
    };
    let granted = execute::<Referrals>(
        store,
        txn,
        referrer_id,
        ReferralCommand::Reward {
            referrer_id,
            referee_id,
            payment_id,
            amount: share,
            currency: currency.as_str().to_owned(),
            percent,
        },
        Actor::system(),
    )
    .await?;
    if granted.is_empty() {
        return Ok(());
    }
    let entry = Entry {
        transaction_id: TransactionId::new(),
        user_id: referrer_id,
        currency: currency.clone(),
        kind: TransactionKind::ReferralReward,
        amount: share_amount,
        reference: Some(format!("payment:{payment_id}")),
        description: Some(format!("{percent}% of a referee's deposit")),
    };
    let key = Balance::key(referrer_id, currency);
    execute::<Balance>(store, txn, &key, entry, Actor::system())
        .await
        .map_err(|e| match e {
            CommandError::Append(a) => CommandError::Append(a),
            CommandError::Db(d) => CommandError::Db(d),
            CommandError::Domain(l) => CommandError::Db(DbErr::Custom(l.to_string())),
        })?;
    Ok(())
}

#[derive(Serialize, ToSchema)]
pub struct ReferralOut {
    /// Share this: `https://t.me/<bot>/<app>?startapp=<code>`, or as
    /// `referral_code` at e-mail sign-up.
    pub code: Option<String>,
    pub referees: Vec<RefereeOut>,
    /// Referral rewards so far, per currency (minor units).
    pub earnings: Vec<EarningOut>,
}

#[derive(Serialize, ToSchema)]
pub struct RefereeOut {
    pub user_id: Uuid,
    pub username: Option<String>,
    pub joined_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct EarningOut {
    pub currency: String,
    pub amount: i64,
}

pub fn configure_cabinet(cfg: &mut web::ServiceConfig) {
    cfg.service(mine);
}

/// The caller's referral code, referees and earnings.
#[utoipa::path(tag = "cabinet", responses((status = 200, body = ReferralOut), (status = 401)), security(("bearer" = [])))]
#[get("/referral")]
#[tracing::instrument(skip_all)]
pub async fn mine(
    state: web::Data<AppState>,
    caller: CabinetUser,
) -> Result<HttpResponse, ApiError> {
    let conn = state.db.conn();
    let me = user::Entity::find_by_id(caller.id.as_uuid())
        .one(conn)
        .await?
        .ok_or_else(|| Problem::not_found().detail("no such user"))?;
    let referees = user::Entity::find()
        .filter(user::Column::ReferredBy.eq(caller.id.to_string()))
        .order_by_asc(user::Column::CreatedAt)
        .all(conn)
        .await?
        .into_iter()
        .map(|u| RefereeOut {
            user_id: u.id,
            username: u.username,
            joined_at: u.created_at,
        })
        .collect();
    let mut earnings: Vec<EarningOut> = Vec::new();
    for t in transaction::Entity::find()
        .filter(transaction::Column::UserId.eq(caller.id.as_uuid()))
        .filter(transaction::Column::Kind.eq("referral_reward"))
        .all(conn)
        .await?
    {
        match earnings.iter_mut().find(|e| e.currency == t.currency) {
            Some(e) => e.amount += t.amount,
            None => earnings.push(EarningOut {
                currency: t.currency,
                amount: t.amount,
            }),
        }
    }
    Ok(HttpResponse::Ok().json(ReferralOut {
        code: me.referral_code,
        referees,
        earnings,
    }))
}
