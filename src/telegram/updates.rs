//! What an update from Telegram means to Switchboard, read with the Bot
//! API's own types (teloxide-core): a private message from a person, a
//! person blocking or allowing the bot, or anything else (kept raw).

use serde_json::Value;
use teloxide_core::types::{Message, Update, UpdateKind, User};

use super::domain::{Media, MessageReceived};
use crate::{ids::UserId, users::domain::TelegramProfile};

/// An update, as far as Switchboard acts on it.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// A private message from a person.
    Message(Box<PrivateMessage>),
    /// A person blocked the bot (`true`) or allowed it again, in their
    /// private chat (`my_chat_member`).
    BotBlocked { telegram_id: i64, blocked: bool },
    /// Telegram asks whether a Stars payment may go ahead (answer within
    /// 10 s).
    PreCheckout {
        query_id: String,
        currency: String,
        total: i64,
        payload: String,
    },
    /// A Stars payment went through (`successful_payment`).
    Paid {
        telegram_id: i64,
        charge_id: String,
        currency: String,
        total: i64,
        payload: String,
    },
    /// Anything else: recorded raw.
    Other,
}

#[derive(Debug, Clone)]
pub struct PrivateMessage {
    pub profile: TelegramProfile,
    pub chat_id: i64,
    /// `Some` for `/start`, with its argument (a referral code) if any.
    pub start: Option<Option<String>>,
    /// It is a bot command (`/…`): not a ticket message.
    pub command: bool,
    /// What a ticket shows of it: the text or caption, else the kinds of
    /// media it carries.
    pub ticket_text: String,
    /// The event, once the user it is from is known.
    message: MessageReceived,
}

impl PrivateMessage {
    /// The files it carries.
    pub fn media(&self) -> &[crate::telegram::domain::Media] {
        &self.message.media
    }

    /// The `telegram.message_received` event, from `user`.
    pub fn event(&self, user: UserId) -> MessageReceived {
        MessageReceived {
            user_id: user,
            ..self.message.clone()
        }
    }
}

/// What `raw` (a stored update) means; `None` if it is not an update.
pub fn read(raw: &Value) -> Option<(i64, Incoming)> {
    let update = parse(raw)?;
    let update_id = i64::from(update.id.0);
    let incoming = match &update.kind {
        UpdateKind::Message(message) => match message.successful_payment() {
            Some(paid) => Incoming::Paid {
                telegram_id: message.from.as_ref().map_or(0, telegram_id),
                charge_id: paid.telegram_payment_charge_id.0.clone(),
                currency: paid.currency.clone(),
                total: i64::from(paid.total_amount),
                payload: paid.invoice_payload.clone(),
            },
            None => private_message(update_id, raw, message)
                .map_or(Incoming::Other, |m| Incoming::Message(Box::new(m))),
        },
        UpdateKind::PreCheckoutQuery(query) => Incoming::PreCheckout {
            query_id: query.id.0.clone(),
            currency: query.currency.clone(),
            total: i64::from(query.total_amount),
            payload: query.invoice_payload.clone(),
        },
        UpdateKind::MyChatMember(change) if change.chat.is_private() && !change.from.is_bot => {
            let blocked = change.new_chat_member.kind.is_banned();
            let allowed = change.new_chat_member.kind.is_member();
            match (blocked, allowed) {
                (true, _) => Incoming::BotBlocked {
                    telegram_id: telegram_id(&change.from),
                    blocked: true,
                },
                (false, true) => Incoming::BotBlocked {
                    telegram_id: telegram_id(&change.from),
                    blocked: false,
                },
                (false, false) => Incoming::Other,
            }
        }
        _ => Incoming::Other,
    };
    Some((update_id, incoming))
}

/// Whether `raw` is an update at all (an object with an `update_id`
/// Telegram's types accept).
pub fn is_update(raw: &Value) -> bool {
    parse(raw).is_some()
}

/// Telegram's types read from text: read from a `Value` their untagged
/// enums lose every message kind.
fn parse(raw: &Value) -> Option<Update> {
    serde_json::from_str(&raw.to_string()).ok()
}

fn telegram_id(user: &User) -> i64 {
    i64::try_from(user.id.0).unwrap_or(i64::MAX)
}

fn private_message(update_id: i64, raw: &Value, message: &Message) -> Option<PrivateMessage> {
    let from = message.from.as_ref().filter(|from| !from.is_bot)?;
    if !message.chat.is_private() {
        return None;
    }
    let text = message.text().map(str::to_owned);
    let caption = message.caption().map(str::to_owned);
    // Entities as Telegram sent them (the raw update has every field).
    let raw_message = &raw["message"];
    let entities = ["entities", "caption_entities"]
        .iter()
        .find_map(|field| raw_message.get(*field).and_then(Value::as_array))
        .cloned()
        .unwrap_or_default();
    let media = media_of(message);
    let command = text.as_deref().is_some_and(|t| t.starts_with('/'));
    let start = text.as_deref().and_then(start_argument);
    let ticket_text = text
        .clone()
        .or_else(|| caption.clone())
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| {
            let kinds: Vec<String> = media.iter().map(|m| format!("[{}]", m.kind)).collect();
            kinds.join(" ")
        });
    let profile = TelegramProfile {
        telegram_id: telegram_id(from),
        username: from.username.clone(),
        first_name: Some(from.first_name.clone()).filter(|n| !n.is_empty()),
        last_name: from.last_name.clone(),
        language_code: from.language_code.clone(),
    };
    Some(PrivateMessage {
        profile,
        chat_id: message.chat.id.0,
        start,
        command,
        ticket_text,
        message: MessageReceived {
            update_id,
            user_id: UserId::from_uuid(uuid::Uuid::nil()),
            chat_id: message.chat.id.0,
            message_id: message.id.0,
            from: raw_message.get("from").cloned().unwrap_or(Value::Null),
            date: message.date.timestamp(),
            text,
            caption,
            entities,
            media,
            reply_to_message_id: message.reply_to_message().map(|m| m.id.0),
            text_length: None,
        },
    })
}

/// `/start` (or `/start@bot`) and its argument, if the text is one.
fn start_argument(text: &str) -> Option<Option<String>> {
    let mut words = text.split_whitespace();
    let command = words.next()?;
    let name = command.split('@').next()?;
    if name != "/start" {
        return None;
    }
    Some(words.next().map(str::to_owned))
}

fn media_of(message: &Message) -> Vec<Media> {
    let file = |kind: &str, meta: &teloxide_core::types::FileMeta| Media {
        kind: kind.to_owned(),
        file_id: meta.id.0.clone(),
        file_unique_id: meta.unique_id.0.clone(),
        file_size: Some(meta.size).filter(|size| *size != u32::MAX),
    };
    let mut media = Vec::new();
    // The largest size of a photo (Telegram lists them smallest first).
    if let Some(largest) = message.photo().and_then(|sizes| sizes.last()) {
        media.push(file("photo", &largest.file));
    }
    if let Some(d) = message.document() {
        media.push(file("document", &d.file));
    }
    if let Some(a) = message.audio() {
        media.push(file("audio", &a.file));
    }
    if let Some(v) = message.voice() {
        media.push(file("voice", &v.file));
    }
    if let Some(v) = message.video() {
        media.push(file("video", &v.file));
    }
    if let Some(v) = message.video_note() {
        media.push(file("video_note", &v.file));
    }
    if let Some(a) = message.animation() {
        media.push(file("animation", &a.file));
    }
    if let Some(s) = message.sticker() {
        media.push(file("sticker", &s.file));
    }
    media
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn private(text: Value) -> Value {
        let mut message = json!({
            "message_id": 5,
            "date": 1_764_590_000,
            "chat": {"id": 42, "type": "private", "first_name": "Ann"},
            "from": {"id": 42, "is_bot": false, "first_name": "Ann", "username": "ann", "language_code": "en"},
        });
        if let (Some(m), Some(extra)) = (message.as_object_mut(), text.as_object()) {
            m.extend(extra.clone());
        }
        json!({"update_id": 9, "message": message})
    }

    #[test]
    fn a_private_text_message_is_a_message_with_its_entities() {
        let raw = private(
            json!({"text": "hello", "entities": [{"type": "bold", "offset": 0, "length": 5}]}),
        );
        let Some((9, Incoming::Message(m))) = read(&raw) else {
            panic!("not a message: {raw}");
        };
        assert_eq!((m.chat_id, m.command, m.start.clone()), (42, false, None));
        assert_eq!(m.ticket_text, "hello");
        assert_eq!(m.profile.username.as_deref(), Some("ann"));
        let event = m.event(UserId::new());
        assert_eq!(event.entities.len(), 1);
        assert_eq!(event.from["username"], "ann");
        assert_eq!(event.date, 1_764_590_000);
    }

    #[test]
    fn start_with_a_code_and_other_commands_are_commands() {
        let raw = private(json!({"text": "/start abc123"}));
        let Some((_, Incoming::Message(m))) = read(&raw) else {
            panic!();
        };
        assert_eq!(m.start, Some(Some("abc123".to_owned())));
        assert!(m.command);
        let raw = private(json!({"text": "/help"}));
        let Some((_, Incoming::Message(m))) = read(&raw) else {
            panic!();
        };
        assert_eq!((m.start, m.command), (None, true));
    }

    #[test]
    fn a_photo_is_media_with_its_largest_size_and_caption() {
        let raw = private(json!({
            "caption": "look",
            "photo": [
                {"file_id": "small", "file_unique_id": "s", "width": 90, "height": 90, "file_size": 100},
                {"file_id": "big", "file_unique_id": "b", "width": 900, "height": 900, "file_size": 9000}
            ]
        }));
        let Some((_, Incoming::Message(m))) = read(&raw) else {
            panic!();
        };
        let event = m.event(UserId::new());
        assert_eq!(event.media.len(), 1);
        assert_eq!(event.media[0].file_id, "big");
        assert_eq!(event.media[0].file_size, Some(9000));
        assert_eq!(m.ticket_text, "look");
        let raw = private(json!({"document": {"file_id": "d", "file_unique_id": "u"}}));
        let Some((_, Incoming::Message(m))) = read(&raw) else {
            panic!();
        };
        assert_eq!(m.ticket_text, "[document]");
    }

    #[test]
    fn blocking_and_unblocking_the_bot_and_other_updates() {
        let change = |old: Value, new: Value| {
            json!({"update_id": 3, "my_chat_member": {
                "chat": {"id": 42, "type": "private", "first_name": "Ann"},
                "from": {"id": 42, "is_bot": false, "first_name": "Ann"},
                "date": 1_764_590_000,
                "old_chat_member": old,
                "new_chat_member": new,
            }})
        };
        let bot = json!({"id": 1, "is_bot": true, "first_name": "Bot"});
        let member = json!({"user": bot, "status": "member"});
        let banned = json!({"user": bot, "status": "kicked", "until_date": 0});
        let kicked = change(member.clone(), banned.clone());
        assert!(matches!(
            read(&kicked),
            Some((
                3,
                Incoming::BotBlocked {
                    telegram_id: 42,
                    blocked: true
                }
            ))
        ));
        let back = change(banned, member);
        assert!(matches!(
            read(&back),
            Some((3, Incoming::BotBlocked { blocked: false, .. }))
        ));
        let edited = json!({"update_id": 4, "edited_message": {
            "message_id": 5, "date": 1, "edit_date": 2,
            "chat": {"id": 42, "type": "private", "first_name": "Ann"},
            "from": {"id": 42, "is_bot": false, "first_name": "Ann"}, "text": "x"}});
        assert!(matches!(read(&edited), Some((4, Incoming::Other))));
        let group = json!({"update_id": 5, "message": {
            "message_id": 5, "date": 1,
            "chat": {"id": -100, "type": "group", "title": "G"},
            "from": {"id": 42, "is_bot": false, "first_name": "Ann"}, "text": "x"}});
        assert!(matches!(read(&group), Some((5, Incoming::Other))));
        assert!(read(&json!({"update_id": "x"})).is_none());
        assert!(!is_update(&json!({"message": {}})));
    }
}
