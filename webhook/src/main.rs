//! `mizzen-webhook`: install the crypto provider, read the flags, serve until SIGTERM.

use std::{net::TcpListener, sync::Arc, time::Duration};

use anyhow::Context;
use clap::Parser;
use mizzen_webhook::{config::Args, metrics::Metrics, server};
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_current_span(false)
        .init();

    let config = Args::parse().into_config()?;
    tracing::info!(
        listen = %config.listen,
        tls_cert = %config.tls_cert.display(),
        tls_key = %config.tls_key.display(),
        cert_poll_ms = config.cert_poll.as_millis() as u64,
        proxy_image = %config.inject.proxy_image,
        native_sidecar = config.inject.native_sidecar,
        excluded_namespaces = ?config.inject.excluded_namespaces,
        "starting mizzen-webhook"
    );
    let listener =
        TcpListener::bind(config.listen).with_context(|| format!("binding {}", config.listen))?;
    let mut running = server::start(listener, &config, Arc::new(Metrics::default())).await?;
    tracing::info!(addr = %running.addr, "serving HTTPS");

    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        result = running.wait() => {
            result.context("the server stopped")?;
            return Ok(());
        }
        _ = term.recv() => tracing::info!("SIGTERM: finishing requests in flight"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: finishing requests in flight"),
    }
    running.shutdown(Duration::from_secs(10)).await?;
    Ok(())
}
