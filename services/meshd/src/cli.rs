//! The command line of meshd and its exit codes: 0 after a clean shutdown, 2 for a bad
//! configuration or usage (the message names the key), 1 for any other failure.
//!
//! - `meshd` serves (the embedded default with no configuration at all).
//! - `meshd dev-token --tenant t1 --user u1` prints an access token the embedded default
//!   accepts (signed with the dev key in the data directory).
//! - `meshd print-config` prints the effective settings as TOML, secrets redacted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use mesh_core::auth::{AccessClaims, is_valid_principal_id, load_or_create_dev_key, random_id};
use mesh_core::config::{self, ConfigError, LogFormat, Overrides, Settings, Sources};

use crate::app::{self, App, StartupError};
use crate::registry;

/// meshd: the mesh's gRPC, grpc-web and HTTP server.
#[derive(Debug, Parser)]
#[command(name = "meshd", version, about)]
pub struct Cli {
    /// TOML configuration file; `MESH__SECTION__KEY` environment variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (key `server.listen`); port 0 picks a free port.
    #[arg(long, global = true, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Comma-separated services to run (key `services`); default: all of this build.
    #[arg(long, global = true, value_name = "LIST", value_delimiter = ',')]
    pub services: Option<Vec<String>>,
    /// Folder for local state of the embedded default (key `data_dir`, default `.mesh`).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log format (key `log.format`).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// What to do; serving is the default.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve until SIGINT or SIGTERM (the default).
    Serve,
    /// Print an access token signed with the embedded default's dev key.
    DevToken {
        /// Tenant id (`tid` claim).
        #[arg(long)]
        tenant: String,
        /// User id (`sub` claim).
        #[arg(long)]
        user: String,
        /// Session id (`sid` claim); random when omitted.
        #[arg(long)]
        session: Option<String>,
        /// A scope to grant; repeat for several.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Lifetime, e.g. `15m` or `1h`.
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Print the effective configuration as TOML, secrets redacted.
    PrintConfig,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    /// Readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Runs the command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let settings = match load_settings(&cli) {
        Ok(settings) => settings,
        Err(error) => return config_failure(error),
    };
    match cli.command {
        None | Some(Command::Serve) => serve(settings),
        Some(Command::DevToken { tenant, user, session, scopes, ttl }) => {
            dev_token(&settings, &tenant, &user, session, &scopes, ttl)
        }
        Some(Command::PrintConfig) => match toml::to_string_pretty(&settings) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(error) => failure(anyhow::anyhow!("failed to print the configuration: {error}")),
        },
    }
}

fn load_settings(cli: &Cli) -> Result<Settings, ConfigError> {
    let overrides = Overrides {
        listen: cli.listen,
        services: cli.services.clone(),
        data_dir: cli.data_dir.clone(),
        log_format: cli.log_format.map(|format| match format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }),
    };
    let settings = config::load(&Sources { file: cli.config.clone() }, &overrides)?;
    // Every command checks the service selection, not just `serve`.
    registry::select(&settings.services)?;
    Ok(settings)
}

fn serve(settings: Settings) -> ExitCode {
    if let Err(error) = mesh_core::telemetry::init(&settings.log) {
        return failure(error);
    }
    let app = match App::build(settings) {
        Ok(app) => app,
        Err(StartupError::Config(error)) => return config_failure(error),
        Err(StartupError::Other(error)) => return failure(error),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return failure(anyhow::anyhow!("failed to start the async runtime: {error}")),
    };
    match runtime.block_on(serve_until_signal(app)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => failure(error),
    }
}

async fn serve_until_signal(app: App) -> anyhow::Result<()> {
    let listener = app::bind(app.settings().server.listen).await?;
    let addr = listener.local_addr()?;
    print_banner(&app, addr);
    // The first SIGINT/SIGTERM starts a graceful shutdown; a second one ends the process
    // at once, for an operator who does not want to wait for the drain.
    let (first_signal, first_signal_received) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = first_signal.send(());
        shutdown_signal().await;
        eprintln!("meshd: second signal: exiting without waiting for the drain");
        std::process::exit(130);
    });
    app.serve(listener, async move {
        let _ = first_signal_received.await;
    })
    .await?;
    tracing::info!("meshd stopped");
    Ok(())
}

/// What meshd serves and how to call it, on stdout. The first line is stable:
/// `meshd listening on <addr>` (tests and scripts read the bound address from it).
fn print_banner(app: &App, addr: SocketAddr) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "meshd listening on {addr}");
    let _ = writeln!(out, "  gRPC, grpc-web (HTTP/1.1 and HTTP/2) and HTTP on http://{addr}");
    for name in app.grpc_service_names() {
        let _ = writeln!(out, "  serving {name}");
    }
    let _ = writeln!(out, "  try: grpcurl -plaintext {addr} list");
    if app.dev_key().is_some() {
        let _ = writeln!(out, "  token: cargo run -p meshd -- dev-token --tenant t1 --user u1");
    }
    let _ = out.flush();
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM; only SIGINT stops meshd");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

fn dev_token(
    settings: &Settings,
    tenant: &str,
    user: &str,
    session: Option<String>,
    scopes: &[String],
    ttl: Duration,
) -> ExitCode {
    if !settings.auth.dev_key {
        return config_failure(ConfigError::new(
            "auth.dev_key",
            "dev-token needs the dev key, which is off once any configuration is given",
            "auth.dev_key = true (the embedded default); with configured keys, tokens come from the Auth service",
        ));
    }
    let pair = match load_or_create_dev_key(&settings.data_dir) {
        Ok(pair) => pair,
        Err(error) => return failure(error),
    };
    for (flag, id) in [("--tenant", tenant), ("--user", user)] {
        if !is_valid_principal_id(id) {
            return config_failure(ConfigError::new(
                flag,
                format!("`{id}` is not a valid id"),
                "1 to 64 characters of A-Z a-z 0-9 _ . -, starting with a letter or digit",
            ));
        }
    }
    if ttl > settings.auth.max_token_lifetime {
        return config_failure(ConfigError::new(
            "--ttl",
            format!("{} is longer than auth.max_token_lifetime", humantime::format_duration(ttl)),
            format!("at most {}", humantime::format_duration(settings.auth.max_token_lifetime)),
        ));
    }
    let session = session.unwrap_or_else(random_id);
    let mut claims = AccessClaims::new(&settings.auth.issuer, &settings.auth.audience, tenant, user, &session, ttl);
    claims.scope = scopes.join(" ");
    match pair.sign(&claims) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(error) => failure(error),
    }
}

fn config_failure(error: ConfigError) -> ExitCode {
    eprintln!("meshd: {error}");
    ExitCode::from(2)
}

fn failure(error: impl Into<anyhow::Error>) -> ExitCode {
    eprintln!("meshd: {:#}", error.into());
    ExitCode::FAILURE
}
