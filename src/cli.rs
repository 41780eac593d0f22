//! Command-line tasks besides serving: creating the first admin, printing
//! the OpenAPI document.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, bail};

use crate::{admin::accounts, auth::Role, config::Config, db::Db, error::ApiError};

/// `switchboard admin create --email … --role …`: the password comes from a
/// prompt (twice) on a terminal, or from the first line of standard input.
pub async fn create_admin(config: &Config, email: &str, role: &str) -> anyhow::Result<()> {
    let role: Role = role.parse().map_err(anyhow::Error::msg)?;
    let password = read_password()?;
    let db = Db::connect(&config.database).await?;
    db.migrate()
        .await
        .context("cannot run database migrations")?;
    let created = match accounts::create(&db, email, &password, role).await {
        Ok(created) => created,
        Err(ApiError::Problem(p)) => match p.field {
            Some(field) => bail!("{field} {}", p.detail.unwrap_or_default()),
            None if p.status.as_u16() == 409 => bail!("an admin with this e-mail already exists"),
            None => bail!("{}", p.detail.unwrap_or_else(|| p.code.to_owned())),
        },
        Err(ApiError::Internal(e)) => return Err(e),
    };
    println!(
        "created {} admin {} ({})",
        role.as_str(),
        created.email,
        created.id
    );
    db.close().await;
    Ok(())
}

fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Password again: ")?;
        if first != second {
            bail!("the passwords differ");
        }
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }
}

/// `switchboard projections rebuild`.
pub async fn rebuild_projections(config: &Config) -> anyhow::Result<()> {
    let db = Db::connect(&config.database).await?;
    db.migrate()
        .await
        .context("cannot run database migrations")?;
    let store = crate::events::EventStore::new(db.clone());
    let started = std::time::Instant::now();
    let replayed = crate::projections::rebuild::rebuild(&store).await?;
    println!(
        "rebuilt the read models from {replayed} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    db.close().await;
    Ok(())
}
