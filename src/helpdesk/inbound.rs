//! What the helpdesk sends this service: an operator's answer, queued in
//! the Telegram outbox for the visitor's user once per message id (and, with
//! support tickets on and texts kept, added to the user's open ticket), or
//! the end of a visitor's chat.

use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    File, ORIGIN, Operator,
    domain::{Direction, HelpdeskError, HelpdeskEvent, Relayed, Visitor},
    store::{self, VisitorRow},
};
use crate::{
    db::{Db, WriteTxn, entities::ticket},
    domain::{Command, CommandError, Target, Work},
    events::RecordedEvent,
    ids::{MessageId, TicketId},
    telegram::outbox::{self, NewSend},
    tickets::domain::{Channel, Status, Ticket, TicketCommand, TicketError},
};

/// Telegram's longest text message, in characters.
const TEXT_LIMIT: usize = 4096;
/// Telegram's longest caption.
const CAPTION_LIMIT: usize = 1024;

/// An operator's answer to a visitor.
pub struct Answer {
    pub db: Db,
    pub visitor_id: String,
    pub message_id: String,
    pub text: String,
    pub file: Option<File>,
    pub operator: Option<Operator>,
    /// Texts are kept (else the sends keep none once they ended).
    pub store_text: bool,
    /// Support tickets are on: the answer is added to the user's ticket.
    pub support: bool,
    // Looked up.
    visitor: Option<VisitorRow>,
    taken: bool,
    ticket: Option<TicketId>,
    sends: Vec<NewSend>,
}

#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error(transparent)]
    Helpdesk(#[from] HelpdeskError),
    #[error(transparent)]
    Ticket(#[from] TicketError),
}

impl crate::domain::DomainError for AnswerError {
    fn refusal(&self) -> crate::domain::Refusal {
        match self {
            Self::Helpdesk(e) => e.refusal(),
            Self::Ticket(e) => e.refusal(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Helpdesk(e) => e.code(),
            Self::Ticket(e) => e.code(),
        }
    }
}

impl Answer {
    pub fn new(db: Db, visitor_id: String, message_id: Option<String>, text: String) -> Self {
        Self {
            db,
            visitor_id,
            message_id: message_id.unwrap_or_else(|| Uuid::now_v7().to_string()),
            text,
            file: None,
            operator: None,
            store_text: true,
            support: false,
            visitor: None,
            taken: false,
            ticket: None,
            sends: Vec::new(),
        }
    }

    /// The Telegram sends that carry the answer to `chat_id`, in order.
    fn sends_to(&self, chat_id: i64) -> Vec<NewSend> {
        let mut calls: Vec<(&str, Value)> = Vec::new();
        let mut text = self.text.trim();
        if let Some(file) = &self.file {
            let (method, field) = if file.media_type.starts_with("image/") {
                ("sendPhoto", "photo")
            } else {
                ("sendDocument", "document")
            };
            let mut params = json!({"chat_id": chat_id, field: file.url});
            if !text.is_empty() && text.chars().count() <= CAPTION_LIMIT {
                params["caption"] = text.into();
                text = "";
            }
            calls.push((method, params));
        }
        for part in chunks(text, TEXT_LIMIT) {
            calls.push(("sendMessage", json!({"chat_id": chat_id, "text": part})));
        }
        let created_at_ms = outbox::now_ms();
        calls
            .into_iter()
            .map(|(method, params)| {
                let mut send = NewSend::new(chat_id, method, params, ORIGIN);
                send.user_id = self.visitor.as_ref().map(|v| v.user_id);
                send.reference = Some(self.message_id.clone());
                send.private = !self.store_text;
                send.created_at_ms = created_at_ms;
                send
            })
            .collect()
    }
}

/// `text` in pieces of at most `limit` characters, cut at a line break or
/// a space where there is one in the piece's second half.
fn chunks(text: &str, limit: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest: Vec<char> = text.chars().collect();
    while !rest.is_empty() {
        if rest.len() <= limit {
            pieces.push(rest.iter().collect());
            break;
        }
        let cut = (limit / 2..limit)
            .rev()
            .find(|&i| rest[i] == '\n' || rest[i] == ' ')
            .map_or(limit, |i| i + 1);
        pieces.push(rest[..cut].iter().collect::<String>().trim_end().to_owned());
        rest.drain(..cut);
    }
    pieces.retain(|p: &String| !p.is_empty());
    pieces
}

impl Command for Answer {
    /// The ids of the Telegram sends that carry it.
    type Output = Vec<String>;
    type Error = AnswerError;

    fn writes(&self) -> bool {
        true
    }

    async fn prepare(
        &mut self,
        conn: &sea_orm::DatabaseConnection,
    ) -> Result<(), CommandError<AnswerError>> {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        self.visitor = store::visitor(conn, &self.db, &self.visitor_id).await?;
        self.taken = store::inbound_taken(conn, &self.db, &self.message_id).await?;
        if let Some(visitor) = &self.visitor {
            self.sends = self.sends_to(visitor.telegram_chat_id);
            self.ticket = if self.support && self.store_text {
                ticket::Entity::find()
                    .filter(ticket::Column::UserId.eq(visitor.user_id.as_uuid()))
                    .filter(ticket::Column::Status.ne(Status::Closed.as_str()))
                    .one(conn)
                    .await?
                    .map(|row| TicketId::from_uuid(row.id))
            } else {
                None
            };
        }
        Ok(())
    }

    fn targets(&self) -> Vec<Target> {
        let mut targets = vec![Target::of::<Visitor>(&self.visitor_id)];
        targets.extend(self.ticket.map(Target::of::<Ticket>));
        targets
    }

    fn decide(&self, work: &mut Work<'_>) -> Result<Vec<String>, AnswerError> {
        let Some(visitor) = &self.visitor else {
            return Err(HelpdeskError::UnknownVisitor.into());
        };
        if self.taken {
            return Err(HelpdeskError::Duplicate.into());
        }
        let sends: Vec<String> = self.sends.iter().map(|s| s.id.to_string()).collect();
        work.execute::<Visitor>(
            &self.visitor_id,
            HelpdeskEvent::MessageRelayed(Relayed {
                direction: Direction::ToUser,
                visitor_id: self.visitor_id.clone(),
                user_id: visitor.user_id,
                message_id: self.message_id.clone(),
                delivered_as: sends.first().cloned(),
                chat_id: visitor.chat_id.clone(),
                length: self.text.chars().count(),
            }),
        )?;
        if let Some(ticket) = self.ticket {
            let open = !matches!(
                work.state::<Ticket>(ticket).status,
                None | Some(Status::Closed)
            );
            if open {
                let operator = self.operator.as_ref();
                let who = operator
                    .and_then(|o| o.name.clone().or_else(|| o.id.clone()))
                    .unwrap_or_else(|| "operator".to_owned());
                work.execute::<Ticket>(
                    ticket,
                    TicketCommand::Reply {
                        admin_id: format!("helpdesk:{who}"),
                        message_id: MessageId::new(),
                        text: self.text.clone(),
                        channel: Channel::Helpdesk,
                    },
                )?;
            }
        }
        Ok(sends)
    }

    async fn write(
        &self,
        txn: &WriteTxn,
        _output: &mut Vec<String>,
        _events: &[RecordedEvent],
    ) -> Result<(), CommandError<AnswerError>> {
        let conn = &**txn;
        let at = outbox::now_ms();
        // Another call with the same message id got in first.
        if !store::take_inbound(conn, &self.db, &self.message_id, &self.visitor_id, at).await? {
            return Err(CommandError::Domain(HelpdeskError::Duplicate.into()));
        }
        outbox::enqueue_all(conn, &self.db, &self.sends).await?;
        Ok(())
    }
}

/// The helpdesk closed a visitor's chat.
pub struct Close {
    pub db: Db,
    pub visitor_id: String,
    pub chat_id: Option<String>,
    pub closed_by: Option<String>,
    visitor: Option<VisitorRow>,
}

impl Close {
    pub fn new(
        db: Db,
        visitor_id: String,
        chat_id: Option<String>,
        closed_by: Option<String>,
    ) -> Self {
        Self {
            db,
            visitor_id,
            chat_id,
            closed_by,
            visitor: None,
        }
    }
}

impl Command for Close {
    type Output = ();
    type Error = HelpdeskError;

    fn writes(&self) -> bool {
        true
    }

    async fn prepare(
        &mut self,
        conn: &sea_orm::DatabaseConnection,
    ) -> Result<(), CommandError<HelpdeskError>> {
        self.visitor = store::visitor(conn, &self.db, &self.visitor_id).await?;
        Ok(())
    }

    fn targets(&self) -> Vec<Target> {
        vec![Target::of::<Visitor>(&self.visitor_id)]
    }

    fn decide(&self, work: &mut Work<'_>) -> Result<(), HelpdeskError> {
        let visitor = self.visitor.as_ref().ok_or(HelpdeskError::UnknownVisitor)?;
        work.execute::<Visitor>(
            &self.visitor_id,
            HelpdeskEvent::ChatClosed {
                visitor_id: self.visitor_id.clone(),
                user_id: visitor.user_id,
                chat_id: self.chat_id.clone().or_else(|| visitor.chat_id.clone()),
                closed_by: self.closed_by.clone(),
            },
        )?;
        Ok(())
    }

    async fn write(
        &self,
        txn: &WriteTxn,
        _output: &mut (),
        _events: &[RecordedEvent],
    ) -> Result<(), CommandError<HelpdeskError>> {
        let at = outbox::now_ms();
        store::close_visitor(
            &**txn,
            &self.db,
            &self.visitor_id,
            self.chat_id.as_deref(),
            at,
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_at_spaces_within_telegrams_limit() {
        let text = "word ".repeat(2000);
        let pieces = chunks(text.trim(), TEXT_LIMIT);
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|p| p.chars().count() <= TEXT_LIMIT));
        assert_eq!(pieces.concat().replace(' ', ""), text.replace(' ', ""));
        assert_eq!(chunks("short", TEXT_LIMIT), vec!["short"]);
        assert!(chunks("", TEXT_LIMIT).is_empty());
        let unbroken = "x".repeat(5000);
        assert_eq!(chunks(&unbroken, TEXT_LIMIT)[0].chars().count(), TEXT_LIMIT);
    }
}
