//! E-mail: templates, the outbox and the SMTP worker.

pub mod outbox;
pub mod templates;
pub mod worker;
