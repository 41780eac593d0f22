//! Support tickets: a user opens one (at most one open at a time, enforced
//! by the read model), both sides add messages, operators change status,
//! priority and assignee. A closed ticket takes no messages.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{
    domain::{Aggregate, DomainError, DomainEvent, Refusal},
    ids::{AdminId, MessageId, TicketId, UserId},
    telegram::domain::Media,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = TicketStatus)]
pub enum Status {
    Open,
    Answered,
    Pending,
    Closed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Answered => "answered",
            Self::Pending => "pending",
            Self::Closed => "closed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    Normal,
    High,
    Urgent,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
            Self::Urgent => "urgent",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Author {
    User,
    Operator,
}

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Cabinet,
    Admin,
    Telegram,
    /// An operator's answer from the helpdesk the bridge relays to.
    Helpdesk,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum TicketEvent {
    #[serde(rename = "ticket.created")]
    Created {
        ticket_id: TicketId,
        user_id: UserId,
        subject: String,
        status: Status,
        priority: Priority,
    },
    #[serde(rename = "ticket.message_added")]
    MessageAdded {
        ticket_id: TicketId,
        /// The ticket's owner (for per-user feeds and filters).
        user_id: UserId,
        message_id: MessageId,
        author: Author,
        /// The user's or the operator's (admin's) id.
        author_id: String,
        text: String,
        channel: Channel,
        /// The files a Telegram user sent with it (shown through
        /// `/api/v1/admin/telegram/files/{file_id}`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        media: Vec<Media>,
    },
    #[serde(rename = "ticket.status_changed")]
    StatusChanged {
        ticket_id: TicketId,
        user_id: UserId,
        old_status: Status,
        new_status: Status,
    },
    #[serde(rename = "ticket.priority_changed")]
    PriorityChanged {
        ticket_id: TicketId,
        user_id: UserId,
        old_priority: Priority,
        new_priority: Priority,
    },
    #[serde(rename = "ticket.assigned")]
    Assigned {
        ticket_id: TicketId,
        user_id: UserId,
        /// `null` when unassigned.
        assignee_id: Option<AdminId>,
    },
}

impl DomainEvent for TicketEvent {
    const TYPES: &'static [&'static str] = &[
        "ticket.created",
        "ticket.message_added",
        "ticket.status_changed",
        "ticket.priority_changed",
        "ticket.assigned",
    ];
}

#[derive(Debug, Clone)]
pub enum TicketCommand {
    Open {
        ticket_id: TicketId,
        user_id: UserId,
        subject: String,
        text: String,
        message_id: MessageId,
        channel: Channel,
        media: Vec<Media>,
    },
    AddUserMessage {
        user_id: UserId,
        message_id: MessageId,
        text: String,
        channel: Channel,
        media: Vec<Media>,
    },
    Reply {
        admin_id: String,
        message_id: MessageId,
        text: String,
        channel: Channel,
    },
    ChangeStatus(Status),
    ChangePriority(Priority),
    Assign(Option<AdminId>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("no such ticket")]
    NotFound,
    #[error("the ticket already exists")]
    AlreadyExists,
    #[error("the ticket is closed; open a new one")]
    Closed,
}

impl DomainError for TicketError {
    fn refusal(&self) -> Refusal {
        match self {
            Self::NotFound => Refusal::NotFound,
            Self::AlreadyExists | Self::Closed => Refusal::Conflict,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::AlreadyExists => "ticket_exists",
            Self::Closed => "ticket_closed",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Ticket {
    pub id: Option<TicketId>,
    pub user_id: Option<UserId>,
    pub status: Option<Status>,
    pub priority: Option<Priority>,
    pub assignee: Option<AdminId>,
}

impl Aggregate for Ticket {
    const CATEGORY: &'static str = "ticket";
    type Event = TicketEvent;
    type Command = TicketCommand;
    type Error = TicketError;

    async fn snapshots(
        conn: &sea_orm::DatabaseExecutor<'_>,
        ids: &[String],
    ) -> Result<HashMap<String, crate::domain::Loaded<Self>>, sea_orm::DbErr> {
        use crate::db::entities::ticket;
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        // Keyed by the ids as given, however they spell the uuid.
        let wanted: HashMap<uuid::Uuid, &String> = ids
            .iter()
            .filter_map(|id| Some((id.parse().ok()?, id)))
            .collect();
        if wanted.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = ticket::Entity::find()
            .filter(ticket::Column::Id.is_in(crate::db::padded(wanted.keys().copied().collect())))
            .all(conn)
            .await?;
        fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Option<T> {
            serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
        }
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let id = (*wanted.get(&row.id)?).clone();
                let loaded = crate::domain::Loaded {
                    state: Ticket {
                        id: Some(TicketId::from_uuid(row.id)),
                        user_id: Some(UserId::from_uuid(row.user_id)),
                        status: parse(&row.status),
                        priority: parse(&row.priority),
                        assignee: row.assignee_id.map(AdminId::from_uuid),
                    },
                    version: u32::try_from(row.version).unwrap_or(0),
                };
                Some((id, loaded))
            })
            .collect())
    }

    fn apply(&mut self, event: &TicketEvent) {
        match event {
            TicketEvent::Created {
                ticket_id,
                user_id,
                status,
                priority,
                ..
            } => {
                self.id = Some(*ticket_id);
                self.user_id = Some(*user_id);
                self.status = Some(*status);
                self.priority = Some(*priority);
            }
            TicketEvent::MessageAdded { .. } => {}
            TicketEvent::StatusChanged { new_status, .. } => self.status = Some(*new_status),
            TicketEvent::PriorityChanged { new_priority, .. } => {
                self.priority = Some(*new_priority);
            }
            TicketEvent::Assigned { assignee_id, .. } => self.assignee = *assignee_id,
        }
    }

    fn decide(&self, command: TicketCommand) -> Result<Vec<TicketEvent>, TicketError> {
        if let TicketCommand::Open {
            ticket_id,
            user_id,
            subject,
            text,
            message_id,
            channel,
            media,
        } = command
        {
            if self.id.is_some() {
                return Err(TicketError::AlreadyExists);
            }
            return Ok(vec![
                TicketEvent::Created {
                    ticket_id,
                    user_id,
                    subject,
                    status: Status::Open,
                    priority: Priority::Normal,
                },
                TicketEvent::MessageAdded {
                    ticket_id,
                    user_id,
                    message_id,
                    author: Author::User,
                    author_id: user_id.to_string(),
                    text,
                    channel,
                    media,
                },
            ]);
        }
        let (Some(ticket_id), Some(owner), Some(status), Some(priority)) =
            (self.id, self.user_id, self.status, self.priority)
        else {
            return Err(TicketError::NotFound);
        };
        let status_change = |new_status: Status| TicketEvent::StatusChanged {
            ticket_id,
            user_id: owner,
            old_status: status,
            new_status,
        };
        match command {
            TicketCommand::Open { .. } => Err(TicketError::AlreadyExists),
            TicketCommand::AddUserMessage {
                user_id,
                message_id,
                text,
                channel,
                media,
            } => {
                if user_id != owner {
                    // Someone else's ticket does not exist for this user.
                    return Err(TicketError::NotFound);
                }
                if status == Status::Closed {
                    return Err(TicketError::Closed);
                }
                let mut events = vec![TicketEvent::MessageAdded {
                    ticket_id,
                    user_id: owner,
                    message_id,
                    author: Author::User,
                    author_id: user_id.to_string(),
                    text,
                    channel,
                    media,
                }];
                // The user wrote again: the ball is back with the operators.
                if matches!(status, Status::Answered | Status::Pending) {
                    events.push(status_change(Status::Open));
                }
                Ok(events)
            }
            TicketCommand::Reply {
                admin_id,
                message_id,
                text,
                channel,
            } => {
                if status == Status::Closed {
                    return Err(TicketError::Closed);
                }
                let mut events = vec![TicketEvent::MessageAdded {
                    ticket_id,
                    user_id: owner,
                    message_id,
                    author: Author::Operator,
                    author_id: admin_id,
                    text,
                    channel,
                    media: Vec::new(),
                }];
                if status != Status::Answered {
                    events.push(status_change(Status::Answered));
                }
                Ok(events)
            }
            TicketCommand::ChangeStatus(new_status) => Ok(if new_status == status {
                Vec::new()
            } else {
                vec![status_change(new_status)]
            }),
            TicketCommand::ChangePriority(new_priority) => Ok(if new_priority == priority {
                Vec::new()
            } else {
                vec![TicketEvent::PriorityChanged {
                    ticket_id,
                    user_id: owner,
                    old_priority: priority,
                    new_priority,
                }]
            }),
            TicketCommand::Assign(assignee) => Ok(if assignee == self.assignee {
                Vec::new()
            } else {
                vec![TicketEvent::Assigned {
                    ticket_id,
                    user_id: owner,
                    assignee_id: assignee,
                }]
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Actor, EventType};

    fn given(events: &[TicketEvent]) -> Ticket {
        let mut ticket = Ticket::default();
        for e in events {
            ticket.apply(e);
        }
        ticket
    }

    fn opened(ticket: TicketId, user: UserId) -> Vec<TicketEvent> {
        Ticket::default()
            .decide(TicketCommand::Open {
                ticket_id: ticket,
                user_id: user,
                subject: "Payment".into(),
                text: "Where is it?".into(),
                message_id: MessageId::new(),
                channel: Channel::Cabinet,
                media: Vec::new(),
            })
            .unwrap()
    }

    #[test]
    fn opening_a_ticket_creates_it_with_the_first_message() {
        let (t, u) = (TicketId::new(), UserId::new());
        let events = opened(t, u);
        assert!(matches!(
            &events[0],
            TicketEvent::Created {
                status: Status::Open,
                priority: Priority::Normal,
                ..
            }
        ));
        assert!(matches!(
            &events[1],
            TicketEvent::MessageAdded {
                author: Author::User,
                ..
            }
        ));
        assert_eq!(
            given(&events)
                .decide(TicketCommand::Open {
                    ticket_id: t,
                    user_id: u,
                    subject: "again".into(),
                    text: "x".into(),
                    message_id: MessageId::new(),
                    channel: Channel::Cabinet,
                    media: Vec::new(),
                })
                .unwrap_err(),
            TicketError::AlreadyExists
        );
    }

    #[test]
    fn an_operator_reply_marks_the_ticket_answered_and_a_user_message_reopens_it() {
        let (t, u) = (TicketId::new(), UserId::new());
        let mut history = opened(t, u);
        let reply = given(&history)
            .decide(TicketCommand::Reply {
                admin_id: "a1".into(),
                message_id: MessageId::new(),
                text: "Checking".into(),
                channel: Channel::Admin,
            })
            .unwrap();
        assert!(matches!(
            reply[1],
            TicketEvent::StatusChanged {
                old_status: Status::Open,
                new_status: Status::Answered,
                ..
            }
        ));
        history.extend(reply);
        let again = given(&history)
            .decide(TicketCommand::Reply {
                admin_id: "a1".into(),
                message_id: MessageId::new(),
                text: "More".into(),
                channel: Channel::Admin,
            })
            .unwrap();
        assert_eq!(again.len(), 1, "already answered: no second status change");
        let user = given(&history)
            .decide(TicketCommand::AddUserMessage {
                user_id: u,
                message_id: MessageId::new(),
                text: "Thanks".into(),
                channel: Channel::Telegram,
                media: Vec::new(),
            })
            .unwrap();
        assert!(matches!(
            user[1],
            TicketEvent::StatusChanged {
                old_status: Status::Answered,
                new_status: Status::Open,
                ..
            }
        ));
    }

    #[test]
    fn a_closed_ticket_takes_no_messages_from_either_side() {
        let (t, u) = (TicketId::new(), UserId::new());
        let mut history = opened(t, u);
        let close = given(&history)
            .decide(TicketCommand::ChangeStatus(Status::Closed))
            .unwrap();
        assert!(matches!(
            close[0],
            TicketEvent::StatusChanged {
                old_status: Status::Open,
                new_status: Status::Closed,
                ..
            }
        ));
        history.extend(close);
        let closed = given(&history);
        assert_eq!(
            closed
                .decide(TicketCommand::AddUserMessage {
                    user_id: u,
                    message_id: MessageId::new(),
                    text: "x".into(),
                    channel: Channel::Cabinet,
                    media: Vec::new(),
                })
                .unwrap_err(),
            TicketError::Closed
        );
        assert_eq!(
            closed
                .decide(TicketCommand::Reply {
                    admin_id: "a".into(),
                    message_id: MessageId::new(),
                    text: "x".into(),
                    channel: Channel::Admin
                })
                .unwrap_err(),
            TicketError::Closed
        );
        assert!(
            closed
                .decide(TicketCommand::ChangeStatus(Status::Closed))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn another_users_message_is_refused_as_not_found() {
        let (t, u) = (TicketId::new(), UserId::new());
        let ticket = given(&opened(t, u));
        assert_eq!(
            ticket
                .decide(TicketCommand::AddUserMessage {
                    user_id: UserId::new(),
                    message_id: MessageId::new(),
                    text: "x".into(),
                    channel: Channel::Cabinet,
                    media: Vec::new(),
                })
                .unwrap_err(),
            TicketError::NotFound
        );
        assert_eq!(
            Ticket::default()
                .decide(TicketCommand::ChangeStatus(Status::Closed))
                .unwrap_err(),
            TicketError::NotFound
        );
    }

    #[test]
    fn priority_and_assignment_change_only_when_different() {
        let (t, u) = (TicketId::new(), UserId::new());
        let ticket = given(&opened(t, u));
        assert!(
            ticket
                .decide(TicketCommand::ChangePriority(Priority::Normal))
                .unwrap()
                .is_empty()
        );
        let up = ticket
            .decide(TicketCommand::ChangePriority(Priority::Urgent))
            .unwrap();
        assert!(matches!(
            up[0],
            TicketEvent::PriorityChanged {
                old_priority: Priority::Normal,
                new_priority: Priority::Urgent,
                ..
            }
        ));
        let admin = AdminId::new();
        let assigned = ticket.decide(TicketCommand::Assign(Some(admin))).unwrap();
        assert!(
            matches!(assigned[0], TicketEvent::Assigned { assignee_id: Some(a), .. } if a == admin)
        );
        assert!(
            given(&[opened(t, u), assigned].concat())
                .decide(TicketCommand::Assign(Some(admin)))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn events_carry_the_catalogue_names_and_payload_fields() {
        let (t, u) = (TicketId::new(), UserId::new());
        let events = opened(t, u);
        let created = events[0].to_new_event(Actor::system());
        assert_eq!(
            created.event_type,
            EventType::parse("ticket.created").unwrap()
        );
        let added = events[1].to_new_event(Actor::system());
        assert_eq!(added.event_type.as_str(), "ticket.message_added");
        assert_eq!(added.payload["text"], "Where is it?");
        let change = given(&events)
            .decide(TicketCommand::ChangeStatus(Status::Pending))
            .unwrap();
        let change = change[0].to_new_event(Actor::system());
        assert_eq!(change.event_type.as_str(), "ticket.status_changed");
        assert_eq!(change.payload["old_status"], "open");
        assert_eq!(change.payload["new_status"], "pending");
        assert!(crate::events::StreamName::parse(Ticket::stream(t).as_str()).is_ok());
    }
}
