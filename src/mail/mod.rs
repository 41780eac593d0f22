//! E-mail: the outbox and the SMTP worker (the templates are in `crate::templates`).

pub mod outbox;
pub mod worker;
