//! chorusd: the chorus live-comment broker.

use std::io::IsTerminal;
use std::process::ExitCode;

use chorus_broker::cli::Args;
use chorus_broker::{Config, Server};
use clap::Parser;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&args.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let config = match load_config(&args) {
        Ok(config) => config,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(2);
        }
    };
    raise_fd_limit();

    info!(version = env!("CARGO_PKG_VERSION"), "chorusd starting");
    let server = match Server::start(config) {
        Ok(server) => server,
        Err(e) => {
            error!("failed to start: {e}");
            return ExitCode::FAILURE;
        }
    };
    server.set_config_loader(Box::new(move || load_config(&args)));

    wait_for_signal(&server);
    info!("chorusd stopping");
    server.shutdown();
    info!("chorusd stopped");
    ExitCode::SUCCESS
}

fn load_config(args: &Args) -> Result<Config, chorus_broker::config::ConfigError> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if !args.listen.is_empty() {
        config.listen = args.listen.clone();
    }
    if !args.ws_listen.is_empty() {
        config.websocket.listen = args.ws_listen.clone();
    }
    if let Some(role) = args.role {
        config.role = role;
    }
    if let Some(workers) = args.workers {
        config.workers = workers;
    }
    if let Some(addr) = args.admin_listen {
        config.admin.listen = addr;
    }
    config.validate()?;
    Ok(config)
}

/// Raises the open-file limit to the hard limit, since every connection takes a descriptor.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < 65_536 => warn!(
            limit,
            "open-file limit is low; raise the hard limit (LimitNOFILE in systemd) for many connections"
        ),
        Ok(limit) => info!(limit, "open-file limit"),
        Err(e) => warn!(error = %e, "failed to raise the open-file limit"),
    }
}

/// Blocks until SIGINT or SIGTERM, reloading the TLS certificates on every SIGHUP.
fn wait_for_signal(server: &Server) {
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(signals) => signals,
        Err(e) => {
            error!(error = %e, "failed to install signal handlers; stopping");
            return;
        }
    };
    for signal in signals.forever() {
        if signal != SIGHUP {
            info!(signal, "signal received");
            return;
        }
        match server.reload_tls() {
            Ok(()) => info!("SIGHUP: TLS certificates reloaded for new connections"),
            Err(e) => {
                error!("SIGHUP: failed to reload TLS certificates, keeping the ones in use: {e}")
            }
        }
    }
}
