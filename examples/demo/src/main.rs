//! `mizzen-demo`: one service of the demo app per process (the image the kind suite deploys).

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use mizzen_demo::{DEFAULT_VERSION, Service, Settings};

#[derive(Parser)]
#[command(name = "mizzen-demo", version, about = "The Mizzen demo app")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// `GET /productpage`: the product with its reviews.
    Productpage {
        #[arg(long)]
        listen: SocketAddr,
        /// Base URL of the reviews service.
        #[arg(long)]
        reviews: String,
        #[arg(long, default_value = DEFAULT_VERSION)]
        version: String,
    },
    /// `GET /reviews/{id}`: reviews, with stars from ratings in v2 and v3.
    Reviews {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value = DEFAULT_VERSION, value_parser = ["v1", "v2", "v3"])]
        version: String,
        /// Base URL of the ratings service.
        #[arg(long)]
        ratings: Option<String>,
        /// Fraction of requests answered 500 (0 to 1).
        #[arg(long, default_value_t = 0.0)]
        error_rate: f64,
    },
    /// `GET /ratings/{id}`: `{"stars":5}`.
    Ratings {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value = DEFAULT_VERSION)]
        version: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let (listen, settings) = match Cli::parse().command {
        Command::Productpage {
            listen,
            reviews,
            version,
        } => (
            listen,
            Settings {
                service: Service::Productpage { reviews },
                version,
                hosts: Default::default(),
            },
        ),
        Command::Reviews {
            listen,
            version,
            ratings,
            error_rate,
        } => (
            listen,
            Settings {
                service: Service::Reviews {
                    ratings,
                    error_rate,
                },
                version,
                hosts: Default::default(),
            },
        ),
        Command::Ratings { listen, version } => (
            listen,
            Settings {
                service: Service::Ratings,
                version,
                hosts: Default::default(),
            },
        ),
    };
    settings.validate()?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(app = settings.app(), version = %settings.version, %listen, "serving");
    mizzen_demo::serve(listener, settings, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
