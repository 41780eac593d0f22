use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchboard::{app::Application, cli, config::Config, db::Db, docs, telemetry};

/// The back office of a Telegram bot business.
#[derive(Parser)]
#[command(name = "switchboard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage admin accounts.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Print the OpenAPI document (as committed in openapi/openapi.json).
    Openapi,
    /// Read models.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// The Telegram bot.
    Telegram {
        #[command(subcommand)]
        command: TelegramCommand,
    },
    /// Exit 0 if the service at the URL is ready to serve (`/readyz`
    /// answers 200), 1 otherwise: a container's health check.
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:8080/readyz")]
        url: String,
    },
}

#[derive(Subcommand)]
enum TelegramCommand {
    /// Point the bot's updates at this service's /telegram/webhook (with the
    /// webhook secret; a new one is made and printed when none is set).
    SetWebhook {
        /// The public https URL of /telegram/webhook.
        #[arg(long)]
        url: String,
    },
    /// Take the bot's updates by long polling (getUpdates) and record them,
    /// until interrupted: for deployments without a public URL.
    Poll,
}

#[derive(Subcommand)]
enum ProjectionsCommand {
    /// Empty every read model and replay the whole log into it (run with
    /// the service stopped).
    Rebuild,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an admin account; the password is read from a prompt, or from
    /// the first line of standard input when it is not a terminal.
    Create {
        #[arg(long)]
        email: String,
        /// owner, admin, operator or viewer
        #[arg(long, default_value = "owner")]
        role: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Openapi) = cli.command {
        println!("{}", docs::openapi_json());
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Healthcheck { url }) = &cli.command {
        return cli::healthcheck(url);
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format, &config.log_filter);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => Application::build(config).await?.run_until_stopped().await,
            Command::Migrate => {
                let db = Db::connect(&config.database).await?;
                db.migrate().await?;
                tracing::info!("migrations applied");
                Ok(())
            }
            Command::Admin {
                command: AdminCommand::Create { email, role },
            } => cli::create_admin(&config, &email, &role).await,
            Command::Openapi | Command::Healthcheck { .. } => Ok(()),
            Command::Projections {
                command: ProjectionsCommand::Rebuild,
            } => cli::rebuild_projections(&config).await,
            Command::Telegram {
                command: TelegramCommand::SetWebhook { url },
            } => cli::set_telegram_webhook(&config, &url).await,
            Command::Telegram {
                command: TelegramCommand::Poll,
            } => cli::poll_telegram(&config).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line with the cause chain; no backtrace for an expected failure.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
