//! Commands decide, events apply: no I/O here.

use serde::{Deserialize, Serialize};

use crate::{
    domain::{Aggregate, DomainError, DomainEvent, Refusal},
    ids::UserId,
};

/// Where a user first came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The bot's `/start`.
    Telegram,
    MiniApp,
    LoginWidget,
    Email,
    Admin,
}

/// Profile fields Telegram tells us about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelegramProfile {
    pub telegram_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserCreated {
    pub user_id: UserId,
    pub source: Source,
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub telegram: Option<TelegramProfile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language_code: Option<String>,
    /// The code this user shares to refer others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referral_code: Option<String>,
    /// Who referred this user, if anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referred_by: Option<UserId>,
    /// The user's private chat with the bot, when they came through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telegram_chat_id: Option<i64>,
}

impl UserCreated {
    /// A new user's own referral code: 16 hex digits of the id's random part.
    pub fn referral_code_for(user: UserId) -> String {
        let bytes = user.as_uuid().into_bytes();
        hex::encode(&bytes[8..])
    }
}

/// `user.updated` carries only the fields that changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserUpdated {
    pub user_id: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language_code: Option<String>,
    /// The user's private chat with the bot, once they wrote to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telegram_chat_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum UserEvent {
    #[serde(rename = "user.created")]
    Created(UserCreated),
    #[serde(rename = "user.updated")]
    Updated(UserUpdated),
    #[serde(rename = "user.email_verified")]
    EmailVerified { user_id: UserId, email: String },
    #[serde(rename = "user.blocked")]
    Blocked { user_id: UserId, reason: String },
    #[serde(rename = "user.unblocked")]
    Unblocked { user_id: UserId },
    /// The user blocked the bot (Telegram said so, or refused a send).
    #[serde(rename = "user.bot_blocked")]
    BotBlocked { user_id: UserId },
    #[serde(rename = "user.bot_unblocked")]
    BotUnblocked { user_id: UserId },
}

impl DomainEvent for UserEvent {
    const TYPES: &'static [&'static str] = &[
        "user.created",
        "user.updated",
        "user.email_verified",
        "user.blocked",
        "user.unblocked",
        "user.bot_blocked",
        "user.bot_unblocked",
    ];
}

/// What the decisions need to know about one user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserState {
    /// `Some` once the user exists.
    pub id: Option<UserId>,
    pub email: Option<String>,
    pub email_verified: bool,
    pub profile: TelegramProfile,
    pub blocked: bool,
    /// The private chat the bot can write to, once known.
    pub chat_id: Option<i64>,
    pub bot_blocked: bool,
}

impl UserState {
    /// Whether the bot can write to the user.
    pub fn reachable(&self) -> Option<i64> {
        self.chat_id.filter(|_| !self.bot_blocked)
    }
}

impl Aggregate for UserState {
    const CATEGORY: &'static str = "user";
    type Event = UserEvent;
    type Command = UserCommand;
    type Error = UserError;

    fn apply(&mut self, event: &UserEvent) {
        match event {
            UserEvent::Created(created) => {
                self.id = Some(created.user_id);
                self.email = created.email.clone();
                if let Some(profile) = &created.telegram {
                    self.profile = profile.clone();
                }
                if self.profile.language_code.is_none() {
                    self.profile.language_code = created.language_code.clone();
                }
                self.chat_id = created.telegram_chat_id;
            }
            UserEvent::Updated(updated) => {
                let p = &mut self.profile;
                for (field, value) in [
                    (&mut p.username, &updated.username),
                    (&mut p.first_name, &updated.first_name),
                    (&mut p.last_name, &updated.last_name),
                    (&mut p.language_code, &updated.language_code),
                ] {
                    if value.is_some() {
                        field.clone_from(value);
                    }
                }
                if updated.telegram_chat_id.is_some() {
                    self.chat_id = updated.telegram_chat_id;
                }
            }
            UserEvent::EmailVerified { .. } => self.email_verified = true,
            UserEvent::Blocked { .. } => self.blocked = true,
            UserEvent::Unblocked { .. } => self.blocked = false,
            UserEvent::BotBlocked { .. } => self.bot_blocked = true,
            UserEvent::BotUnblocked { .. } => self.bot_blocked = false,
        }
    }

    fn decide(&self, command: UserCommand) -> Result<Vec<UserEvent>, UserError> {
        decide(self, command)
    }
}

#[derive(Debug, Clone)]
pub enum UserCommand {
    Register(UserCreated),
    /// Telegram told us the profile again (a login); record what changed.
    RefreshTelegramProfile(TelegramProfile),
    VerifyEmail,
    /// An admin edits the profile: only the given fields change.
    Edit(UserUpdated),
    Block {
        reason: String,
    },
    Unblock,
    /// The user's private chat became known: recorded if it was not.
    LinkChat(i64),
    /// Telegram says the user blocked the bot, or allowed it again.
    SetBotBlocked(bool),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("the user already exists")]
    AlreadyExists,
    #[error("no such user")]
    NotFound,
    #[error("the user has no e-mail address")]
    NoEmail,
    #[error("this account is blocked")]
    Blocked,
}

impl DomainError for UserError {
    fn refusal(&self) -> Refusal {
        match self {
            Self::AlreadyExists => Refusal::Conflict,
            Self::NotFound => Refusal::NotFound,
            Self::NoEmail => Refusal::Invalid,
            Self::Blocked => Refusal::Forbidden,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::AlreadyExists => "user_exists",
            Self::NotFound => "not_found",
            Self::NoEmail => "no_email",
            Self::Blocked => "forbidden",
        }
    }
}

/// The events a command produces, given the user's state.
fn decide(state: &UserState, command: UserCommand) -> Result<Vec<UserEvent>, UserError> {
    if let UserCommand::Register(created) = command {
        if state.id.is_some() {
            return Err(UserError::AlreadyExists);
        }
        return Ok(vec![UserEvent::Created(created)]);
    }
    let Some(user) = state.id else {
        return Err(UserError::NotFound);
    };
    match command {
        UserCommand::Register(_) => Err(UserError::AlreadyExists),
        UserCommand::RefreshTelegramProfile(profile) => {
            let old = &state.profile;
            let changed = |new: &Option<String>, old: &Option<String>| {
                new.as_ref().filter(|n| Some(*n) != old.as_ref()).cloned()
            };
            let update = UserUpdated {
                user_id: user,
                username: changed(&profile.username, &old.username),
                first_name: changed(&profile.first_name, &old.first_name),
                last_name: changed(&profile.last_name, &old.last_name),
                language_code: changed(&profile.language_code, &old.language_code),
                telegram_chat_id: None,
            };
            if update
                == (UserUpdated {
                    user_id: user,
                    ..Default::default()
                })
            {
                return Ok(Vec::new());
            }
            Ok(vec![UserEvent::Updated(update)])
        }
        UserCommand::VerifyEmail => {
            let email = state.email.clone().ok_or(UserError::NoEmail)?;
            if state.email_verified {
                return Ok(Vec::new());
            }
            Ok(vec![UserEvent::EmailVerified {
                user_id: user,
                email,
            }])
        }
        UserCommand::Edit(mut update) => {
            update.user_id = user;
            let old = &state.profile;
            let changed = |new: &Option<String>, old: &Option<String>| {
                new.as_ref().filter(|n| Some(*n) != old.as_ref()).cloned()
            };
            let update = UserUpdated {
                user_id: user,
                username: changed(&update.username, &old.username),
                first_name: changed(&update.first_name, &old.first_name),
                last_name: changed(&update.last_name, &old.last_name),
                language_code: changed(&update.language_code, &old.language_code),
                telegram_chat_id: None,
            };
            if update
                == (UserUpdated {
                    user_id: user,
                    ..Default::default()
                })
            {
                return Ok(Vec::new());
            }
            Ok(vec![UserEvent::Updated(update)])
        }
        UserCommand::Block { reason } => Ok(if state.blocked {
            Vec::new()
        } else {
            vec![UserEvent::Blocked {
                user_id: user,
                reason,
            }]
        }),
        UserCommand::Unblock => Ok(if state.blocked {
            vec![UserEvent::Unblocked { user_id: user }]
        } else {
            Vec::new()
        }),
        UserCommand::LinkChat(chat_id) => Ok(if state.chat_id == Some(chat_id) {
            Vec::new()
        } else {
            vec![UserEvent::Updated(UserUpdated {
                user_id: user,
                telegram_chat_id: Some(chat_id),
                ..Default::default()
            })]
        }),
        UserCommand::SetBotBlocked(blocked) => Ok(if state.bot_blocked == blocked {
            Vec::new()
        } else if blocked {
            vec![UserEvent::BotBlocked { user_id: user }]
        } else {
            vec![UserEvent::BotUnblocked { user_id: user }]
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::testing::given,
        events::{Actor, ActorKind, EventType, StreamName},
    };

    fn decide_on(state: &UserState, command: UserCommand) -> Result<Vec<UserEvent>, UserError> {
        state.decide(command)
    }

    fn created(user: UserId, source: Source) -> UserCreated {
        UserCreated {
            user_id: user,
            source,
            telegram: Some(TelegramProfile {
                telegram_id: 42,
                username: Some("old".into()),
                first_name: Some("Ann".into()),
                ..Default::default()
            }),
            email: None,
            language_code: None,
            referral_code: None,
            referred_by: None,
            telegram_chat_id: None,
        }
    }

    #[test]
    fn registering_a_new_user_creates_it_and_twice_is_refused() {
        let user = UserId::new();
        let events = decide_on(
            &UserState::default(),
            UserCommand::Register(created(user, Source::MiniApp)),
        )
        .unwrap();
        assert!(matches!(&events[..], [UserEvent::Created(c)] if c.source == Source::MiniApp));
        let state = given::<UserState>(&events);
        assert_eq!(
            decide_on(
                &state,
                UserCommand::Register(created(user, Source::MiniApp))
            ),
            Err(UserError::AlreadyExists)
        );
    }

    #[test]
    fn a_telegram_login_records_only_what_changed() {
        let user = UserId::new();
        let state = given::<UserState>(&[UserEvent::Created(created(user, Source::LoginWidget))]);
        let same = TelegramProfile {
            telegram_id: 42,
            username: Some("old".into()),
            first_name: Some("Ann".into()),
            ..Default::default()
        };
        assert!(
            decide_on(&state, UserCommand::RefreshTelegramProfile(same.clone()))
                .unwrap()
                .is_empty()
        );
        let renamed = TelegramProfile {
            username: Some("new".into()),
            ..same
        };
        let events = decide_on(&state, UserCommand::RefreshTelegramProfile(renamed)).unwrap();
        assert_eq!(
            events,
            vec![UserEvent::Updated(UserUpdated {
                user_id: user,
                username: Some("new".into()),
                ..Default::default()
            })]
        );
    }

    #[test]
    fn verifying_an_email_happens_once_and_needs_an_email() {
        let user = UserId::new();
        let mut with_email = created(user, Source::Email);
        with_email.telegram = None;
        with_email.email = Some("a@example.com".into());
        let mut state = given::<UserState>(&[UserEvent::Created(with_email)]);
        let events = decide_on(&state, UserCommand::VerifyEmail).unwrap();
        assert_eq!(
            events,
            vec![UserEvent::EmailVerified {
                user_id: user,
                email: "a@example.com".into()
            }]
        );
        state.apply(&events[0]);
        assert!(
            decide_on(&state, UserCommand::VerifyEmail)
                .unwrap()
                .is_empty()
        );
        let telegram_only =
            given::<UserState>(&[UserEvent::Created(created(user, Source::Telegram))]);
        assert_eq!(
            decide_on(&telegram_only, UserCommand::VerifyEmail),
            Err(UserError::NoEmail)
        );
    }

    #[test]
    fn blocking_and_unblocking_happen_once_each() {
        let user = UserId::new();
        let mut state = given::<UserState>(&[UserEvent::Created(created(user, Source::Telegram))]);
        let blocked = decide_on(
            &state,
            UserCommand::Block {
                reason: "spam".into(),
            },
        )
        .unwrap();
        assert_eq!(
            blocked,
            vec![UserEvent::Blocked {
                user_id: user,
                reason: "spam".into()
            }]
        );
        state.apply(&blocked[0]);
        assert!(
            decide_on(
                &state,
                UserCommand::Block {
                    reason: "again".into()
                }
            )
            .unwrap()
            .is_empty()
        );
        let unblocked = decide_on(&state, UserCommand::Unblock).unwrap();
        assert_eq!(
            unblocked[0]
                .to_new_event(Actor::system())
                .event_type
                .as_str(),
            "user.unblocked"
        );
        state.apply(&unblocked[0]);
        assert!(decide_on(&state, UserCommand::Unblock).unwrap().is_empty());
        assert_eq!(
            blocked[0].to_new_event(Actor::system()).event_type.as_str(),
            "user.blocked"
        );
    }

    #[test]
    fn a_chat_is_linked_once_and_the_bot_blocked_and_unblocked_once_each() {
        let user = UserId::new();
        let mut state = given::<UserState>(&[UserEvent::Created(created(user, Source::MiniApp))]);
        assert_eq!(state.reachable(), None);
        let linked = decide_on(&state, UserCommand::LinkChat(42)).unwrap();
        assert_eq!(
            linked,
            vec![UserEvent::Updated(UserUpdated {
                user_id: user,
                telegram_chat_id: Some(42),
                ..Default::default()
            })]
        );
        state.apply(&linked[0]);
        assert_eq!(state.reachable(), Some(42));
        assert!(
            decide_on(&state, UserCommand::LinkChat(42))
                .unwrap()
                .is_empty()
        );
        let blocked = decide_on(&state, UserCommand::SetBotBlocked(true)).unwrap();
        assert_eq!(blocked, vec![UserEvent::BotBlocked { user_id: user }]);
        state.apply(&blocked[0]);
        assert_eq!(state.reachable(), None);
        assert!(
            decide_on(&state, UserCommand::SetBotBlocked(true))
                .unwrap()
                .is_empty()
        );
        let unblocked = decide_on(&state, UserCommand::SetBotBlocked(false)).unwrap();
        assert_eq!(unblocked, vec![UserEvent::BotUnblocked { user_id: user }]);
        assert_eq!(
            unblocked[0]
                .to_new_event(Actor::system())
                .event_type
                .as_str(),
            "user.bot_unblocked"
        );
    }

    #[test]
    fn an_admin_edit_records_only_changed_fields() {
        let user = UserId::new();
        let state = given::<UserState>(&[UserEvent::Created(created(user, Source::Telegram))]);
        let edit = UserUpdated {
            user_id: user,
            username: Some("old".into()),
            first_name: Some("Anna".into()),
            ..Default::default()
        };
        let events = decide_on(&state, UserCommand::Edit(edit)).unwrap();
        assert_eq!(
            events,
            vec![UserEvent::Updated(UserUpdated {
                user_id: user,
                first_name: Some("Anna".into()),
                ..Default::default()
            })]
        );
        assert_eq!(
            decide_on(&UserState::default(), UserCommand::Unblock),
            Err(UserError::NotFound)
        );
    }

    #[test]
    fn events_carry_the_catalogue_names_and_read_back() {
        let user = UserId::new();
        let event = UserEvent::Created(created(user, Source::Telegram));
        let new = event.to_new_event(Actor::new(ActorKind::Telegram, 42));
        assert_eq!(new.event_type, EventType::parse("user.created").unwrap());
        assert!(StreamName::parse(UserState::stream(user).as_str()).is_ok());
        assert_eq!(new.payload["telegram_id"], 42);
        assert_eq!(new.payload["source"], "telegram");
        let verified = UserEvent::EmailVerified {
            user_id: user,
            email: "x@y.z".into(),
        };
        assert_eq!(
            verified.to_new_event(Actor::system()).event_type.as_str(),
            "user.email_verified"
        );
        assert_eq!(
            UserEvent::Updated(UserUpdated {
                user_id: user,
                ..Default::default()
            })
            .to_new_event(Actor::system())
            .event_type
            .as_str(),
            "user.updated"
        );
    }
}
