//! What the benchmarks share: a scratch PostgreSQL database, psql, and a
//! signed Telegram Mini App sign-in for load users.
#![allow(dead_code)]

use std::process::Command;

use serde_json::json;
use switchboard::config::{Config, DatabaseConfig};

pub mod fake_bot;

#[path = "../../tests/api/telegram_signing.rs"]
mod telegram_signing;
/// The made-up bot token the benchmarks configure.
pub use telegram_signing::{BOT_TOKEN, sign_init_data};

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
    sign_init_data(&[
        ("auth_date", chrono::Utc::now().timestamp().to_string()),
        (
            "user",
            json!({"id": telegram_id, "first_name": "Load"}).to_string(),
        ),
    ])
}

/// The service's configuration for an in-process benchmark on `url`: port
/// 0, warnings only, the benchmarks' secrets and bot token, and whatever
/// `extra` sets.
pub fn service_config(url: &str, extra: impl Fn(&str) -> Option<String>) -> Config {
    let mut config = Config::from_lookup(|name| {
        extra(name).or_else(|| match name {
            "SWITCHBOARD_TELEGRAM_BOT_TOKEN" => Some(BOT_TOKEN.to_owned()),
            // Never Telegram's own: nothing listens there.
            "SWITCHBOARD_TELEGRAM_API_URL" => Some("http://127.0.0.1:9".to_owned()),
            "SWITCHBOARD_JWT_SECRET" => Some("bench-secret-bench-secret-bench-secret-0".to_owned()),
            "SWITCHBOARD_LOG" => Some("warn".to_owned()),
            _ => None,
        })
    })
    .unwrap();
    config.database = DatabaseConfig::Postgres {
        url: url.to_owned(),
        max_connections: 16,
    };
    config.listen = "127.0.0.1:0".parse().unwrap();
    config
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(stat_path: &str) -> u64 {
    let stat = std::fs::read_to_string(stat_path).unwrap();
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// [`cpu_ticks`] of every process named `postgres` (the server and its
/// backends); a backend that exits takes its ticks with it.
pub fn postgres_ticks() -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let path = entry.path().join("stat");
        let Ok(stat) = std::fs::read_to_string(&path) else {
            continue;
        };
        let name = stat
            .find('(')
            .zip(stat.rfind(')'))
            .map(|(open, close)| &stat[open + 1..close]);
        if name == Some("postgres") {
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            total +=
                fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
        }
    }
    total
}

/// All cores' ticks, from the first line of `/proc/stat`.
pub struct MachineTicks {
    /// Neither idle nor waiting for I/O (stolen time included).
    pub busy: u64,
    pub idle: u64,
    /// Taken by the hypervisor for other guests.
    pub steal: u64,
    pub total: u64,
}

pub fn machine_ticks() -> MachineTicks {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().unwrap())
        .collect();
    // user nice system idle iowait irq softirq steal
    let total: u64 = ticks.iter().sum();
    MachineTicks {
        busy: total - ticks[3] - ticks[4],
        idle: ticks[3] + ticks[4],
        steal: ticks[7],
        total,
    }
}

/// USER_HZ, 100 on every Linux this runs on.
pub const TICKS_PER_SECOND: f64 = 100.0;

/// `pgbench` running `script` with `clients` clients for `duration`: its
/// transactions per second (the benchmarks' reference).
pub fn pgbench_tps(
    url: &str,
    script: &std::path::Path,
    clients: u32,
    duration: std::time::Duration,
) -> f64 {
    let output = Command::new("pgbench")
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            &clients.to_string(),
            "-j",
            "2",
        ])
        .args(["-T", &duration.as_secs().to_string(), "-f"])
        .arg(script)
        .arg(url)
        .output()
        .expect("pgbench must be installed (Debian: postgresql-client)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no tps in pgbench output: {stdout}"))
}
