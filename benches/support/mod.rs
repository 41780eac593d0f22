//! What the benchmarks share: a scratch PostgreSQL database, psql, and a
//! signed Telegram Mini App sign-in for load users.
#![allow(dead_code)]

use std::process::Command;

use hmac::{KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;

/// The made-up bot token the benchmarks configure.
pub const BOT_TOKEN: &str = "7000000001:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";

/// The server URL the benchmarks connect to as administrator.
pub fn admin_url() -> String {
    std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `BENCH_SECONDS` (default 10).
pub fn seconds() -> u64 {
    std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

/// Drops and creates `name`; returns its URL.
pub fn fresh_database(admin_url: &str, name: &str) -> String {
    drop_database(admin_url, name);
    psql(admin_url, &format!("CREATE DATABASE {name}"));
    with_database(admin_url, name)
}

pub fn drop_database(admin_url: &str, name: &str) {
    psql(
        admin_url,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
}

pub fn psql(url: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .args(["-v", "ON_ERROR_STOP=1", "-Atc", sql, url])
        .output()
        .expect("psql must be installed");
    assert!(
        output.status.success(),
        "psql `{sql}` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `url` with its database replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = base[scheme_end..]
        .find('/')
        .map_or(base, |slash| &base[..scheme_end + slash]);
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Mini App `initData` for a Telegram user, signed with [`BOT_TOKEN`].
pub fn init_data(telegram_id: u32) -> String {
    let fields = [
        (
            "auth_date".to_owned(),
            chrono::Utc::now().timestamp().to_string(),
        ),
        (
            "user".to_owned(),
            json!({"id": telegram_id, "first_name": "Load"}).to_string(),
        ),
    ];
    let check = fields
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut secret = hmac::Hmac::<Sha256>::new_from_slice(b"WebAppData").unwrap();
    secret.update(BOT_TOKEN.as_bytes());
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&secret.finalize().into_bytes()).unwrap();
    mac.update(check.as_bytes());
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &fields {
        out.append_pair(k, v);
    }
    out.append_pair("hash", &hex::encode(mac.finalize().into_bytes()));
    out.finish()
}
