//! sea-orm entities of the tables other than the event log.

pub mod admin;
pub mod api_key;
pub mod balance;
pub mod email_token;
pub mod mail;
pub mod payment;
pub mod refresh_token;
pub mod session;
pub mod setting;
pub mod subscription;
pub mod telegram_login;
pub mod ticket;
pub mod ticket_message;
pub mod ticket_read;
pub mod transaction;
pub mod user;
pub mod user_credential;
