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
    db::entities::{transaction, user},
    domain::{Aggregate, DomainError, DomainEvent, Loaded, Refusal, Target, Work},
    error::{ApiError, Problem},
    events::Actor,
    ids::{PaymentId, UserId},
    ledger::domain::{Amount, Balance, Currency, Entry, LedgerError, TransactionKind},
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

impl DomainEvent for ReferralEvent {
    const TYPES: &'static [&'static str] = &["referral.registered", "referral.reward_granted"];
}

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
    fn refusal(&self) -> Refusal {
        Refusal::Invalid
    }

    fn code(&self) -> &'static str {
        "self_referral"
    }
}

/// One referrer's programme. It keeps no state its rules need: a referee is
/// registered in the command that creates them, and a payment is rewarded
/// in the command that completes it, each once by those aggregates' own
/// rules. So loading it is reading its version, however long its stream
/// (a popular referrer's grows by an event per referee's deposit).
#[derive(Debug, Clone, Default)]
pub struct Referrals;

impl Aggregate for Referrals {
    const CATEGORY: &'static str = "referral";
    type Event = ReferralEvent;
    type Command = ReferralCommand;
    type Error = ReferralError;

    async fn snapshots(
        conn: &sea_orm::DatabaseExecutor<'_>,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, Loaded<Self>>, DbErr> {
        let streams: Vec<_> = ids.iter().map(Self::stream).collect();
        let versions = crate::events::store::stream_versions(conn, &streams).await?;
        Ok(ids
            .iter()
            .zip(&streams)
            .map(|(id, stream)| {
                let version = versions.get(stream).copied().unwrap_or(0);
                (
                    id.clone(),
                    Loaded {
                        state: Referrals,
                        version,
                    },
                )
            })
            .collect())
    }

    fn apply(&mut self, _event: &ReferralEvent) {}

    fn decide(&self, command: ReferralCommand) -> Result<Vec<ReferralEvent>, ReferralError> {
        match command {
            ReferralCommand::Register {
                referrer_id,
                referee_id,
            } => {
                if referrer_id == referee_id {
                    return Err(ReferralError::SelfReferral);
                }
                Ok(vec![ReferralEvent::Registered {
                    referrer_id,
                    referee_id,
                }])
            }
            ReferralCommand::Reward {
                referrer_id,
                referee_id,
                payment_id,
                amount,
                currency,
                percent,
            } => Ok(if amount <= 0 {
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
            }),
        }
    }
}

/// A referee's referrer and the share of deposits they earn, as a payment
/// command needs them.
#[derive(Debug, Clone)]
pub struct Reward {
    pub referrer_id: UserId,
    pub percent: u32,
}

impl Reward {
    /// The referee's referrer, if they have one and rewards are on.
    pub fn of(referee: &user::Model, percent: u32) -> Option<Self> {
        if percent == 0 {
            return None;
        }
        let referrer_id = referee.referred_by.as_ref()?.parse::<UserId>().ok()?;
        Some(Self {
            referrer_id,
            percent,
        })
    }

    /// The aggregates crediting the reward in `currency` changes.
    pub fn targets(&self, currency: &Currency) -> Vec<Target> {
        vec![
            Target::of::<Referrals>(self.referrer_id),
            Target::of::<Balance>(Balance::key(self.referrer_id, currency)),
        ]
    }

    /// Credits the referrer's share of a referee's deposit: the reward in
    /// the programme's stream and a `referral_reward` ledger entry.
    pub fn grant(
        &self,
        work: &mut Work<'_>,
        referee_id: UserId,
        payment_id: PaymentId,
        deposit: Amount,
        currency: &Currency,
    ) -> Result<(), LedgerError> {
        let share = deposit.get().saturating_mul(i64::from(self.percent)) / 100;
        let Ok(share_amount) = Amount::parse(share) else {
            return Ok(());
        };
        let granted = work
            .execute_as::<Referrals>(
                Actor::system(),
                self.referrer_id,
                ReferralCommand::Reward {
                    referrer_id: self.referrer_id,
                    referee_id,
                    payment_id,
                    amount: share,
                    currency: currency.as_str().to_owned(),
                    percent: self.percent,
                },
            )
            // Rewards are never refused.
            .unwrap_or_default();
        if granted.is_empty() {
            return Ok(());
        }
        work.execute_as::<Balance>(
            Actor::system(),
            Balance::key(self.referrer_id, currency),
            Entry {
                transaction_id: crate::ledger::service::entry_id(payment_id, "referral"),
                user_id: self.referrer_id,
                currency: currency.clone(),
                kind: TransactionKind::ReferralReward,
                amount: share_amount,
                reference: Some(format!("payment:{payment_id}")),
                description: Some(format!("{}% of a referee's deposit", self.percent)),
            },
        )?;
        Ok(())
    }
}

/// Registers a new user as a referrer's referee, in the command creating
/// them (a user cannot refer themselves).
pub fn register(
    work: &mut Work<'_>,
    referrer_id: UserId,
    referee_id: UserId,
) -> Result<(), ReferralError> {
    work.execute_as::<Referrals>(
        Actor::system(),
        referrer_id,
        ReferralCommand::Register {
            referrer_id,
            referee_id,
        },
    )?;
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
