//! The demo app of Mizzen's local mesh: a tiny bookinfo-like shop of three services.
//!
//! - `productpage` answers `GET /productpage` with a product and the reviews it fetched from
//!   `reviews` (`{"product": ..., "reviews": ...}`);
//! - `reviews` (`v1`, `v2`, `v3`) answers `GET /reviews/{id}`; `v2` and `v3` ask `ratings`
//!   for the stars, `v1` shows none; `--error-rate` makes a fraction of its answers 500s, so a
//!   canary has something to roll back;
//! - `ratings` answers `GET /ratings/{id}` with `{"stars":5}`.
//!
//! Every service answers `GET /healthz` and tags every response with [`VERSION_HEADER`], so a
//! caller (and a test) sees which version served it. The same code runs as the `mizzen-demo`
//! binary (one service per process, as in a cluster) and inside `mizzenctl local up` (one
//! tokio task per workload): [`serve`] takes a bound listener and a shutdown future.
#![forbid(unsafe_code)]

pub mod errors;
pub mod upstream;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::errors::ErrorBudget;
use crate::upstream::Upstream;

/// The response header naming the version that answered.
pub const VERSION_HEADER: &str = "x-demo-version";
/// The version a service reports when it is given none.
pub const DEFAULT_VERSION: &str = "v1";

/// Which service a process (or task) plays, with what it calls.
#[derive(Clone, Debug, PartialEq)]
pub enum Service {
    /// Calls `{reviews}/reviews/0` for every page.
    Productpage {
        reviews: String,
    },
    /// Calls `{ratings}/ratings/{id}` when set and the version shows stars (`v2`, `v3`);
    /// answers 500 for `error_rate` of its requests (0 to 1).
    Reviews {
        ratings: Option<String>,
        error_rate: f64,
    },
    Ratings,
}

/// One demo workload: the service it plays and the version it reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub service: Service,
    pub version: String,
    /// Host names resolved without DNS (the local mesh maps service hosts to loopback, where
    /// the caller's sidecar listens).
    pub hosts: BTreeMap<String, IpAddr>,
}

/// Why settings cannot run.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SettingsError {
    #[error("--error-rate {0} is not a fraction between 0 and 1")]
    ErrorRate(f64),
    #[error("--version {0:?} cannot go in a response header")]
    Version(String),
}

impl Settings {
    /// Checks what the command line cannot: the error rate is a fraction, the version a header.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if let Service::Reviews { error_rate, .. } = self.service
            && !(0.0..=1.0).contains(&error_rate)
        {
            return Err(SettingsError::ErrorRate(error_rate));
        }
        HeaderValue::from_str(&self.version)
            .map_err(|_| SettingsError::Version(self.version.clone()))?;
        Ok(())
    }

    /// The service's name as the mesh knows it (`app` label).
    pub fn app(&self) -> &'static str {
        match self.service {
            Service::Productpage { .. } => "productpage",
            Service::Reviews { .. } => "reviews",
            Service::Ratings => "ratings",
        }
    }
}

struct Ctx {
    settings: Settings,
    upstream: Upstream,
    errors: ErrorBudget,
}

/// The service's routes, `/healthz` included, every answer tagged with the version.
pub fn router(settings: Settings) -> Result<Router, SettingsError> {
    settings.validate()?;
    let version = HeaderValue::from_str(&settings.version)
        .map_err(|_| SettingsError::Version(settings.version.clone()))?;
    let error_rate = match settings.service {
        Service::Reviews { error_rate, .. } => error_rate,
        _ => 0.0,
    };
    let routes = match settings.service {
        Service::Productpage { .. } => Router::new().route("/productpage", get(productpage)),
        Service::Reviews { .. } => Router::new().route("/reviews/{id}", get(reviews)),
        Service::Ratings => Router::new().route("/ratings/{id}", get(ratings)),
    };
    let ctx = Arc::new(Ctx {
        upstream: Upstream::new(settings.hosts.clone()),
        settings,
        errors: ErrorBudget::new(error_rate),
    });
    Ok(routes
        .route("/healthz", get(|| async { "ok" }))
        .with_state(ctx)
        .layer(axum::middleware::map_response(
            move |mut response: Response| {
                let version = version.clone();
                async move {
                    response.headers_mut().insert(VERSION_HEADER, version);
                    response
                }
            },
        )))
}

/// Serves `settings` on `listener` until `shutdown` completes, then lets open requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = router(settings)?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

async fn productpage(State(ctx): State<Arc<Ctx>>) -> Response {
    let Service::Productpage { reviews } = &ctx.settings.service else {
        unreachable!("the route exists only for productpage")
    };
    let product = json!({"id": 0, "title": "The Comedy of Errors"});
    match ctx.upstream.get_json(&format!("{reviews}/reviews/0")).await {
        Ok(reviews) => Json(json!({"product": product, "reviews": reviews})).into_response(),
        // The page fails with its dependency, so the failure shows at every hop of the mesh.
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            Json(json!({"product": product, "error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn reviews(State(ctx): State<Arc<Ctx>>, Path(id): Path<u64>) -> Response {
    let Service::Reviews { ratings, .. } = &ctx.settings.service else {
        unreachable!("the route exists only for reviews")
    };
    if ctx.errors.next_fails() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "injected by --error-rate"})),
        )
            .into_response();
    }
    let version = ctx.settings.version.as_str();
    let stars = match (version, ratings) {
        ("v1", _) | (_, None) => Value::Null,
        (_, Some(url)) => match ctx.upstream.get_json(&format!("{url}/ratings/{id}")).await {
            Ok(v) => v,
            Err(e) => {
                return (
                    StatusCode::BAD_GATEWAY,
                    Json(json!({"version": version, "error": e.to_string()})),
                )
                    .into_response();
            }
        },
    };
    let color = match version {
        "v2" => Some("black"),
        "v3" => Some("red"),
        _ => None,
    };
    Json(json!({"id": id, "version": version, "ratings": stars, "color": color})).into_response()
}

async fn ratings(Path(_id): Path<u64>) -> Json<Value> {
    Json(json!({"stars": 5}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_refuse_what_cannot_run() {
        let bad = Settings {
            service: Service::Reviews {
                ratings: None,
                error_rate: 1.5,
            },
            version: "v2".into(),
            hosts: BTreeMap::new(),
        };
        assert_eq!(bad.validate(), Err(SettingsError::ErrorRate(1.5)));
        let bad = Settings {
            service: Service::Ratings,
            version: "v\n1".into(),
            hosts: BTreeMap::new(),
        };
        assert!(matches!(bad.validate(), Err(SettingsError::Version(_))));
    }
}
