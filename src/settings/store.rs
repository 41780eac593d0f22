//! The `settings` rows of integration settings: `integration:<key>`, the
//! value as JSON text (secrets sealed), and when and by whom it was last
//! changed. The table's other rows are the service's own and never read or
//! written here.

use sea_orm::{ConnectionTrait, Value as DbValue};
use serde_json::Value;

use super::SettingsError;
use crate::{db::Db, ids::AdminId};

/// Integration settings' keys begin with this, so that no key of the API
/// can name one of the service's own rows (`log_id`, …).
const PREFIX: &str = "integration:";

/// One setting as stored.
pub(super) struct Row {
    /// Secrets sealed.
    pub value: Value,
    pub updated_at_ms: Option<i64>,
    pub updated_by: Option<AdminId>,
}

fn stored_key(key: &str) -> String {
    format!("{PREFIX}{key}")
}

fn values(key: &str, row: &Row) -> Vec<DbValue> {
    vec![
        stored_key(key).into(),
        row.value.to_string().into(),
        row.updated_at_ms.into(),
        row.updated_by.map(|id| id.to_string()).into(),
    ]
}

pub(super) async fn read(
    conn: &impl ConnectionTrait,
    db: &Db,
    key: &'static str,
) -> Result<Option<Row>, SettingsError> {
    let Some(row) = conn
        .query_one_raw(db.statement(
            "SELECT value, updated_at_ms, updated_by FROM settings WHERE key = $1",
            vec![stored_key(key).into()],
        ))
        .await?
    else {
        return Ok(None);
    };
    let malformed = |reason: String| SettingsError::Malformed { key, reason };
    let value: String = row.try_get("", "value")?;
    let updated_by: Option<String> = row.try_get("", "updated_by")?;
    Ok(Some(Row {
        value: serde_json::from_str(&value).map_err(|e| malformed(e.to_string()))?,
        updated_at_ms: row.try_get("", "updated_at_ms")?,
        updated_by: updated_by
            .map(|id| id.parse::<AdminId>())
            .transpose()
            .map_err(|e| malformed(format!("updated_by: {e}")))?,
    }))
}

/// Stores `row` as `key`, replacing what was there.
pub(super) async fn upsert(
    conn: &impl ConnectionTrait,
    db: &Db,
    key: &str,
    row: &Row,
) -> Result<(), SettingsError> {
    conn.execute_raw(db.statement(
        "INSERT INTO settings (key, value, updated_at_ms, updated_by) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
         updated_at_ms = excluded.updated_at_ms, updated_by = excluded.updated_by",
        values(key, row),
    ))
    .await?;
    Ok(())
}

/// Stores `row` as `key` unless something is stored as `key` already;
/// whether it did.
pub(super) async fn insert_absent(
    conn: &impl ConnectionTrait,
    db: &Db,
    key: &str,
    row: &Row,
) -> Result<bool, SettingsError> {
    let result = conn
        .execute_raw(db.statement(
            "INSERT INTO settings (key, value, updated_at_ms, updated_by) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING",
            values(key, row),
        ))
        .await?;
    Ok(result.rows_affected() > 0)
}
