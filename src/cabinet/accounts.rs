//! The commands behind cabinet sign-in: find or create the user of a
//! Telegram sign-in, register by e-mail, verify the address, reset the
//! password. Each writes its events and its session, credential, token and
//! outbox rows in one transaction.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, Set, sea_query::Expr,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::{
    auth::{
        sessions::{self, TokensOut},
        tokens::{Audience, JwtKeys, random_token, token_hash},
    },
    db::{
        WriteTxn,
        entities::{email_token, user_credential},
    },
    domain::{Command, CommandError, DomainError, Refusal, Target, Work},
    events::{Actor, ActorKind, RecordedEvent},
    ids::UserId,
    mail::outbox,
    referrals::{self, ReferralError, Referrals},
    users::{
        UserCommand, UserError, UserState,
        domain::{Source, TelegramProfile, UserCreated},
        service::{find_by_email, find_by_telegram_id},
    },
};

/// Why an account command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Referral(#[from] ReferralError),
    #[error("the link is invalid, used or expired")]
    InvalidLink,
}

impl DomainError for AccountError {
    fn refusal(&self) -> Refusal {
        match self {
            Self::User(e) => e.refusal(),
            Self::Referral(e) => e.refusal(),
            Self::InvalidLink => Refusal::Invalid,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::User(e) => e.code(),
            Self::Referral(e) => e.code(),
            Self::InvalidLink => "invalid_link",
        }
    }
}

/// A session's failure inside a command: the database unavailable, or
/// nothing the client can act on.
fn internal<E>(e: crate::error::ApiError) -> CommandError<E> {
    match e {
        crate::error::ApiError::Problem(p)
            if p.status == actix_web::http::StatusCode::SERVICE_UNAVAILABLE =>
        {
            CommandError::Append(crate::events::AppendError::Unavailable(p.to_string()))
        }
        other => CommandError::Internal(anyhow::anyhow!("{other}")),
    }
}

/// The pages the e-mailed links open.
#[derive(Clone, Copy)]
pub enum Page {
    Verify,
    Reset,
    Forgot,
}

impl Page {
    fn front_end_path(self) -> &'static str {
        match self {
            Self::Verify => "verify-email",
            Self::Reset => "reset-password",
            Self::Forgot => "forgot-password",
        }
    }

    fn api_path(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::Reset => "reset",
            Self::Forgot => "forgot",
        }
    }
}

/// Where e-mailed links point: the cabinet front end's pages when one is
/// configured, else the small pages served here.
#[derive(Debug, Clone)]
pub struct Links {
    pub public_url: String,
    pub cabinet_url: Option<String>,
}

impl Links {
    pub fn to(&self, page: Page, token: Option<&SecretString>) -> String {
        let query = token
            .map(|t| format!("?token={}", t.expose_secret()))
            .unwrap_or_default();
        match &self.cabinet_url {
            Some(cabinet) => format!("{cabinet}/{}{query}", page.front_end_path()),
            None => format!(
                "{}/api/v1/cabinet/auth/email/{}{query}",
                self.public_url,
                page.api_path()
            ),
        }
    }
}

/// Creates the e-mail token row and returns the secret for the link. A
/// verification token carries the password it was issued with.
pub async fn new_email_token(
    conn: &impl ConnectionTrait,
    user: uuid::Uuid,
    purpose: &str,
    ttl: Duration,
    password_hash: Option<String>,
) -> Result<SecretString, DbErr> {
    let token = random_token("");
    let now = Utc::now();
    email_token::ActiveModel {
        token_hash: Set(token_hash(token.expose_secret())),
        user_id: Set(user),
        purpose: Set(purpose.to_owned()),
        created_at: Set(now),
        expires_at: Set(now + chrono::Duration::from_std(ttl).unwrap_or_default()),
        used_at: Set(None),
        password_hash: Set(password_hash),
    }
    .insert(conn)
    .await?;
    Ok(token)
}

/// A new user's events: created, and registered with their referrer.
fn create(work: &mut Work<'_>, actor: Actor, created: UserCreated) -> Result<(), AccountError> {
    let (id, referrer) = (created.user_id, created.referred_by);
    work.execute_as::<UserState>(actor, id, UserCommand::Register(created))?;
    if let Some(referrer) = referrer {
        referrals::register(work, referrer, id)?;
    }
    Ok(())
}

fn creation_targets(id: UserId, referrer: Option<UserId>) -> Vec<Target> {
    let mut targets = vec![Target::of::<UserState>(id)];
    targets.extend(referrer.map(Target::of::<Referrals>));
    targets
}

/// The user of a verified Telegram sign-in, found or created, and a new
/// session. Profile changes are recorded only from data newer than the
/// last change.
pub struct TelegramSignIn {
    pub profile: TelegramProfile,
    pub auth_date: DateTime<Utc>,
    pub start_param: Option<String>,
    pub source: Source,
    pub jwt: JwtKeys,
    pub refresh_ttl: Duration,
    /// Looked up: the user with this Telegram id and when they last changed.
    existing: Option<(UserId, DateTime<Utc>)>,
    /// The id a new user gets.
    new_id: UserId,
    referrer: Option<UserId>,
}

impl TelegramSignIn {
    pub fn new(
        profile: TelegramProfile,
        auth_date: DateTime<Utc>,
        start_param: Option<String>,
        source: Source,
        jwt: JwtKeys,
        refresh_ttl: Duration,
    ) -> Self {
        Self {
            profile,
            auth_date,
            start_param,
            source,
            jwt,
            refresh_ttl,
            existing: None,
            new_id: UserId::new(),
            referrer: None,
        }
    }
}

/// A signed-in user.
pub struct SignedIn {
    pub user_id: UserId,
    pub created: bool,
    pub tokens: Option<TokensOut>,
}

impl Command for TelegramSignIn {
    type Output = SignedIn;
    type Error = AccountError;
    fn writes(&self) -> bool {
        true
    }

    async fn prepare(
        &mut self,
        conn: &DatabaseConnection,
    ) -> Result<(), CommandError<AccountError>> {
        self.existing = find_by_telegram_id(conn, self.profile.telegram_id)
            .await?
            .map(|row| (UserId::from_uuid(row.id), row.updated_at));
        self.referrer = match self.existing {
            Some(_) => None,
            None => referrals::referrer(conn, self.start_param.as_deref()).await?,
        };
        Ok(())
    }

    fn targets(&self) -> Vec<Target> {
        match self.existing {
            Some((id, _)) => vec![Target::of::<UserState>(id)],
            None => creation_targets(self.new_id, self.referrer),
        }
    }

    fn decide(&self, work: &mut Work<'_>) -> Result<SignedIn, AccountError> {
        if let Some((id, updated_at)) = self.existing {
            if work.state::<UserState>(id).blocked {
                return Err(UserError::Blocked.into());
            }
            // Telegram dates have whole seconds: compare at that precision.
            if self.auth_date >= updated_at.trunc_subsecs(0) {
                work.execute::<UserState>(
                    id,
                    UserCommand::RefreshTelegramProfile(self.profile.clone()),
                )?;
            }
            return Ok(SignedIn {
                user_id: id,
                created: false,
                tokens: None,
            });
        }
        let actor = work.actor().clone();
        create(
            work,
            actor,
            UserCreated {
                user_id: self.new_id,
                source: self.source,
                telegram: Some(self.profile.clone()),
                email: None,
                language_code: None,
                referral_code: Some(UserCreated::referral_code_for(self.new_id)),
                referred_by: self.referrer,
                telegram_chat_id: None,
            },
        )?;
        Ok(SignedIn {
            user_id: self.new_id,
            created: true,
            tokens: None,
        })
    }

    async fn write(
        &self,
        txn: &WriteTxn,
        output: &mut SignedIn,
        _events: &[RecordedEvent],
    ) -> Result<(), CommandError<AccountError>> {
        let tokens = sessions::start(
            &**txn,
            &self.jwt,
            self.refresh_ttl,
            Audience::Cabinet,
            output.user_id.as_uuid(),
        )
        .await
        .map_err(internal)?;
        output.tokens = Some(tokens);
        Ok(())
    }
}

/// What an e-mail registration needs to send its e-mail.
#[derive(Debug, Clone)]
pub struct Mailing {
    pub links: Links,
    pub verification_ttl: Duration,
    pub language: String,
}

/// Registers an e-mail address with a password, and e-mails a verification
/// link; an address that has a verified account gets a notice instead.
pub struct RegisterByEmail {
    pub email: String,
    pub password_hash: String,
    pub referral_code: Option<String>,
    pub mailing: Mailing,
    /// Looked up: the account with this address, verified or not.
    existing: Option<(UserId, bool)>,
    new_id: UserId,
    referrer: Option<UserId>,
}

impl RegisterByEmail {
    pub fn new(
        email: String,
        password_hash: String,
        referral_code: Option<String>,
        mailing: Mailing,
    ) -> Self {
        Self {
            email,
            password_hash,
            referral_code,
            mailing,
            existing: None,
            new_id: UserId::new(),
            referrer: None,
        }
    }
}

impl Command for RegisterByEmail {
    /// The user registered now, if one was.
    type Output = Option<UserId>;
    type Error = AccountError;
    fn writes(&self) -> bool {
        true
    }

    async fn prepare(
        &mut self,
        conn: &DatabaseConnection,
    ) -> Result<(), CommandError<AccountError>> {
        self.existing = find_by_email(conn, &self.email)
            .await?
            .map(|row| (UserId::from_uuid(row.id), row.email_verified));
        self.referrer = match self.existing {
            Some(_) => None,
            None => referrals::referrer(conn, self.referral_code.as_deref()).await?,
        };
        Ok(())
    }

    fn targets(&self) -> Vec<Target> {
        match self.existing {
            Some((id, _)) => vec![Target::of::<UserState>(id)],
            None => creation_targets(self.new_id, self.referrer),
        }
    }

    fn decide(&self, work: &mut Work<'_>) -> Result<Option<UserId>, AccountError> {
        if self.existing.is_some() {
            return Ok(None);
        }
        create(
            work,
            Actor::new(ActorKind::User, self.new_id),
            UserCreated {
                user_id: self.new_id,
                source: Source::Email,
                telegram: None,
                email: Some(self.email.clone()),
                language_code: Some(self.mailing.language.clone()),
                referral_code: Some(UserCreated::referral_code_for(self.new_id)),
                referred_by: self.referrer,
                telegram_chat_id: None,
            },
        )?;
        Ok(Some(self.new_id))
    }

    async fn write(
        &self,
        txn: &WriteTxn,
        output: &mut Option<UserId>,
        _events: &[RecordedEvent],
    ) -> Result<(), CommandError<AccountError>> {
        let mailing = &self.mailing;
        let verify_with = match (self.existing, *output) {
            // Registered but never verified: a fresh link, which carries
            // this password. Whoever proves the mailbox decides the
            // password, so a stranger who registers the address gains
            // nothing; the account's password changes only when a link is
            // used.
            (Some((id, false)), _) => id,
            (Some((_, true)), _) => {
                let forgot = mailing.links.to(Page::Forgot, None);
                outbox::enqueue(
                    &**txn,
                    &self.email,
                    "already_registered",
                    &mailing.language,
                    json!({"reset_link": forgot}),
                )
                .await?;
                return Ok(());
            }
            (None, Some(id)) => {
                user_credential::ActiveModel {
                    user_id: Set(id.as_uuid()),
                    password_hash: Set(self.password_hash.clone()),
                    password_changed_at: Set(Utc::now()),
                }
                .insert(&**txn)
                .await?;
                id
            }
            (None, None) => return Ok(()),
        };
        let token = new_email_token(
            &**txn,
            verify_with.as_uuid(),
            "verify",
            mailing.verification_ttl,
            Some(self.password_hash.clone()),
        )
        .await?;
        let link = mailing.links.to(Page::Verify, Some(&token));
        outbox::enqueue(
            &**txn,
            &self.email,
            "verify_email",
            &mailing.language,
            json!({"link": link}),
        )
        .await?;
        Ok(())
    }
}

/// The user a live e-mail token of `purpose` belongs to.
async fn token_user(
    conn: &impl ConnectionTrait,
    token: &str,
    purpose: &str,
) -> Result<UserId, CommandError<AccountError>> {
    let now = Utc::now();
    email_token::Entity::find_by_id(token_hash(token))
        .one(conn)
        .await?
        .filter(|t| t.purpose == purpose && t.used_at.is_none() && t.expires_at > now)
        .map(|t| UserId::from_uuid(t.user_id))
        .ok_or(CommandError::Domain(AccountError::InvalidLink))
}

/// Marks a token used (refused if someone used it first); the password it
/// carries, if any.
async fn redeem(
    txn: &WriteTxn,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Option<String>, CommandError<AccountError>> {
    let password_hash = email_token::Entity::find_by_id(token_hash(token))
        .one(&**txn)
        .await?
        .and_then(|t| t.password_hash);
    let used = email_token::Entity::update_many()
        .col_expr(email_token::Column::UsedAt, Expr::value(now))
        .filter(email_token::Column::TokenHash.eq(token_hash(token)))
        .filter(email_token::Column::UsedAt.is_null())
        .exec(&**txn)
        .await?;
    if used.rows_affected != 1 {
        return Err(CommandError::Domain(AccountError::InvalidLink));
    }
    Ok(password_hash)
}

/// Sets the account's password.
async fn set_password(txn: &WriteTxn, user: uuid::Uuid, hash: String) -> Result<(), DbErr> {
    user_credential::Entity::insert(user_credential::ActiveModel {
        user_id: Set(user),
        password_hash: Set(hash),
        password_changed_at: Set(Utc::now()),
    })
    .on_conflict(
        sea_orm::sea_query::OnConflict::column(user_credential::Column::UserId)
            .update_columns([
                user_credential::Column::PasswordHash,
                user_credential::Column::PasswordChangedAt,
            ])
            .to_owned(),
    )
    .exec(&**txn)
    .await?;
    Ok(())
}

/// Ends the unused tokens of `purpose` of a user.
async fn void_tokens(
    txn: &WriteTxn,
    user: uuid::Uuid,
    purpose: &str,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    email_token::Entity::update_many()
        .col_expr(email_token::Column::UsedAt, Expr::value(now))
        .filter(email_token::Column::UserId.eq(user))
        .filter(email_token::Column::Purpose.eq(purpose))
        .filter(email_token::Column::UsedAt.is_null())
        .exec(&**txn)
        .await?;
    Ok(())
}

/// Verifies the address with the token from the e-mailed link.
pub struct VerifyEmail {
    token: String,
    user_id: UserId,
}

impl VerifyEmail {
    pub fn new(token: String) -> Self {
        Self {
            token,
            user_id: UserId::from_uuid(uuid::Uuid::nil()),
        }
    }
}

impl Command for VerifyEmail {
    type Output = UserId;
    type Error = AccountError;
    fn writes(&self) -> bool {
        true
    }

    async fn prepare(
        &mut self,
        conn: &DatabaseConnection,
    ) -> Result<(), CommandError<AccountError>> {
        self.user_id = token_user(conn, &self.token, "verify").await?;
        Ok(())
    }

    fn targets(&self) -> Vec<Target> {
        vec![Target::of::<UserState>(self.user_id)]
    }

    fn decide(&self, work: &mut Work<'_>) -> Result<UserId, AccountError> {
        work.execute_as::<UserState>(
            Actor::new(ActorKind::User, self.user_id),
            self.user_id,
            UserCommand::VerifyEmail,
        )?;
        Ok(self.user_id)
    }

    /// The first verification sets the password its link was issued with,
    /// and ends the other verification links; a later one only uses up its
    /// link.
    async fn write(
        &self,
        txn: &WriteTxn,
        _output: &mut UserId,
        events: &[RecordedEvent],
    ) -> Result<(), CommandError<AccountError>> {
        let now = Utc::now();
        let password_hash = redeem(txn, &self.token, now).await?;
        if !events.is_empty() {
            let user = self.user_id.as_uuid();
            if let Some(hash) = password_hash {
                set_password(txn, user, hash).await?;
            }
            void_tokens(txn, user, "verify", now).await?;
        }
        Ok(())
    }
}

/// Sets a new password with the token from the reset e-mail: every other
/// reset link stops working, the address counts as verified (the reset
/// proved the mailbox), and every session of the account ends.
pub struct ResetPassword {
    token: String,
    password_hash: String,
    user_id: UserId,
}

impl ResetPassword {
    pub fn new(token: String, password_hash: String) -> Self {
        Self {
            token,
            password_hash,
            user_id: UserId::from_uuid(uuid::Uuid::nil()),
        }
    }
}

impl Command for ResetPassword {
    type Output = UserId;
    type Error = AccountError;
    fn writes(&self) -> bool {
        true
    }

    async fn prepare(
        &mut self,
        conn: &DatabaseConnection,
    ) -> Result<(), CommandError<AccountError>> {
        self.user_id = token_user(conn, &self.token, "reset").await?;
        Ok(())
    }

    fn targets(&self) -> Vec<Target> {
        vec![Target::of::<UserState>(self.user_id)]
    }

    fn decide(&self, work: &mut Work<'_>) -> Result<UserId, AccountError> {
        work.execute_as::<UserState>(
            Actor::new(ActorKind::User, self.user_id),
            self.user_id,
            UserCommand::VerifyEmail,
        )?;
        Ok(self.user_id)
    }

    async fn write(
        &self,
        txn: &WriteTxn,
        _output: &mut UserId,
        _events: &[RecordedEvent],
    ) -> Result<(), CommandError<AccountError>> {
        let now = Utc::now();
        redeem(txn, &self.token, now).await?;
        let user = self.user_id.as_uuid();
        set_password(txn, user, self.password_hash.clone()).await?;
        // Any other link sent earlier stops working too.
        void_tokens(txn, user, "reset", now).await?;
        void_tokens(txn, user, "verify", now).await?;
        sessions::revoke_all(&**txn, Audience::Cabinet, user, "password reset").await?;
        Ok(())
    }
}
