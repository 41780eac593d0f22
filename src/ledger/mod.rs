//! Balances, the ledger and payments.

pub mod domain;
pub mod projection;
pub mod routes;
pub mod service;
