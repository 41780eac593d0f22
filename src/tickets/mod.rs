//! Support tickets: the aggregate, its read model, and the cabinet and
//! admin routes.

pub mod admin_routes;
pub mod cabinet_routes;
pub mod domain;
pub mod projection;
pub mod queries;

pub use domain::{Ticket, TicketCommand, TicketError, TicketEvent};
