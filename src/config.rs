//! Configuration: environment variables (`SWITCHBOARD_*` and `DATABASE_URL`),
//! optionally from a `.env` file, validated once at start.

use std::{net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

/// Where the SQLite file lives when `DATABASE_URL` is not set.
pub const DEFAULT_SQLITE_PATH: &str = "./data/switchboard.db";

/// Everything the service reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseConfig,
    pub listen: SocketAddr,
    pub log_format: LogFormat,
    /// A `tracing` filter directive, e.g. `info` or `switchboard=debug,info`.
    pub log_filter: String,
    /// How often the log tailer polls when nothing woke it.
    pub tailer_poll_interval: Duration,
    /// How long in-flight requests get to finish after SIGTERM/SIGINT.
    pub shutdown_timeout: Duration,
    /// HTTP worker threads (default: one per core).
    pub http_workers: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseConfig {
    Sqlite { path: PathBuf },
    Postgres { url: String, max_connections: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// A configuration value that cannot be used; the message names the variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {variable}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub reason: String,
}

impl Config {
    /// Reads the process environment (after loading `.env` if present).
    pub fn from_env() -> Result<Self, ConfigError> {
        // A missing .env is the normal case; a malformed one is worth a warning
        // but is reported once telemetry is up, so it is returned, not printed.
        let _ = dotenvy::dotenv();
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any variable source (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        let max_connections = parse_or(&get, "SWITCHBOARD_DB_MAX_CONNECTIONS", 16u32)?;
        if max_connections == 0 {
            return Err(invalid(
                "SWITCHBOARD_DB_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }
        let database = match get("DATABASE_URL") {
            None => DatabaseConfig::Sqlite {
                path: PathBuf::from(DEFAULT_SQLITE_PATH),
            },
            Some(url) => parse_database_url(&url, max_connections)?,
        };

        let listen = parse_or(
            &get,
            "SWITCHBOARD_LISTEN",
            SocketAddr::from(([127, 0, 0, 1], 8080)),
        )?;
        let log_format = match get("SWITCHBOARD_LOG_FORMAT").as_deref() {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    "SWITCHBOARD_LOG_FORMAT",
                    format!("expected `json` or `pretty`, got `{other}`"),
                ));
            }
        };
        let log_filter = get("SWITCHBOARD_LOG")
            .or_else(|| get("RUST_LOG"))
            .unwrap_or_else(|| "info".to_owned());
        let tailer_poll_interval =
            Duration::from_millis(parse_or(&get, "SWITCHBOARD_TAILER_POLL_MS", 1000u64)?);
        if tailer_poll_interval.is_zero() {
            return Err(invalid("SWITCHBOARD_TAILER_POLL_MS", "must be at least 1"));
        }
        let shutdown_timeout =
            Duration::from_secs(parse_or(&get, "SWITCHBOARD_SHUTDOWN_TIMEOUT_SECS", 30u64)?);

        let default_workers = std::thread::available_parallelism().map_or(2, usize::from);
        let http_workers = parse_or(&get, "SWITCHBOARD_HTTP_WORKERS", default_workers)?;
        if http_workers == 0 {
            return Err(invalid("SWITCHBOARD_HTTP_WORKERS", "must be at least 1"));
        }

        Ok(Self {
            database,
            listen,
            log_format,
            log_filter,
            tailer_poll_interval,
            shutdown_timeout,
            http_workers,
        })
    }
}

/// Accepts `postgres://…`, `postgresql://…`, `sqlite://path` and `sqlite:path`.
fn parse_database_url(url: &str, max_connections: u32) -> Result<DatabaseConfig, ConfigError> {
    let url = url.trim();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // Let the driver judge the rest of the URL now, so a typo is reported at
        // start with the variable's name rather than as a connection failure.
        url.parse::<sea_orm::sqlx::postgres::PgConnectOptions>()
            .map_err(|e| invalid("DATABASE_URL", format!("not a valid PostgreSQL URL: {e}")))?;
        return Ok(DatabaseConfig::Postgres {
            url: url.to_owned(),
            max_connections,
        });
    }
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() {
            return Err(invalid("DATABASE_URL", "sqlite URL has no file path"));
        }
        return Ok(DatabaseConfig::Sqlite {
            path: PathBuf::from(path),
        });
    }
    Err(invalid(
        "DATABASE_URL",
        "expected a URL starting with postgres://, postgresql:// or sqlite:",
    ))
}

fn parse_or<T>(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match get(variable) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|e| invalid(variable, format!("cannot parse `{raw}`: {e}"))),
    }
}

fn invalid(variable: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn no_configuration_gives_sqlite_on_localhost_8080() {
        let config = config(&[]).unwrap();
        assert_eq!(
            config.database,
            DatabaseConfig::Sqlite {
                path: PathBuf::from("./data/switchboard.db")
            }
        );
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.log_format, LogFormat::Pretty);
    }

    #[test]
    fn a_postgres_url_selects_postgres() {
        let config = config(&[("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/app")]).unwrap();
        assert!(matches!(config.database, DatabaseConfig::Postgres { .. }));
    }

    #[test]
    fn a_malformed_database_url_names_the_variable() {
        let err = config(&[("DATABASE_URL", "mysql://x")]).unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
        let err = config(&[("DATABASE_URL", "postgres://user@host:notaport/db")]).unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
    }

    #[test]
    fn a_bad_listen_address_or_log_format_is_refused() {
        let err = config(&[("SWITCHBOARD_LISTEN", "localhost")]).unwrap_err();
        assert_eq!(err.variable, "SWITCHBOARD_LISTEN");
        let err = config(&[("SWITCHBOARD_LOG_FORMAT", "xml")]).unwrap_err();
        assert_eq!(err.variable, "SWITCHBOARD_LOG_FORMAT");
        assert!(err.to_string().contains("xml"));
    }

    #[test]
    fn sqlite_urls_give_a_file_path() {
        let config = config(&[("DATABASE_URL", "sqlite://tmp/x.db?mode=rwc")]).unwrap();
        assert_eq!(
            config.database,
            DatabaseConfig::Sqlite {
                path: PathBuf::from("tmp/x.db")
            }
        );
    }
}
