//! Keeps the webhook's serving certificate (Secret `mizzen-webhook-tls`) and the `caBundle` of
//! both webhook configurations current. What to write is decided by
//! `mizzen_webhook::bootstrap`; this task only runs it periodically, and only while leading.

use std::time::Duration;

use kube::Client;
use tokio::sync::watch;

/// Runs until the leadership channel closes. Failures are logged and retried at the next tick;
/// the webhook keeps serving its current certificate meanwhile.
pub async fn keep_current(
    client: Client,
    namespace: String,
    mut leading: watch::Receiver<bool>,
    period: Duration,
) {
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = leading.changed() => if changed.is_err() { return },
        }
        if !*leading.borrow() {
            continue;
        }
        match mizzen_webhook::bootstrap::ensure(client.clone(), &namespace).await {
            Ok(applied) => {
                if applied.renewal.is_some() || !applied.patched.is_empty() {
                    tracing::info!(renewal = ?applied.renewal, patched = ?applied.patched, "webhook certificate updated");
                }
            }
            Err(e) => tracing::warn!(error = %e, "webhook certificate check failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;

    /// A follower never touches the Secret or the webhook configurations.
    #[tokio::test(start_paused = true)]
    async fn a_follower_writes_nothing() {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(svc, "default");
        let (_tx, rx) = watch::channel(false);
        let task = tokio::spawn(keep_current(
            client,
            "mizzen-system".into(),
            rx,
            Duration::from_secs(10),
        ));
        let seen = tokio::time::timeout(Duration::from_secs(60), handle.next_request()).await;
        assert!(seen.is_err(), "a follower sent a request");
        task.abort();
    }

    /// The leader reads the Secret first (what it writes next is bootstrap's own tested plan).
    #[tokio::test(start_paused = true)]
    async fn the_leader_checks_the_certificate() {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(svc, "default");
        let (_tx, rx) = watch::channel(true);
        let task = tokio::spawn(keep_current(
            client,
            "mizzen-system".into(),
            rx,
            Duration::from_secs(10),
        ));
        let (request, _send) = tokio::time::timeout(Duration::from_secs(60), handle.next_request())
            .await
            .expect("the leader sends a request")
            .expect("a request");
        assert_eq!(request.method(), http::Method::GET);
        assert_eq!(
            request.uri().path(),
            "/api/v1/namespaces/mizzen-system/secrets/mizzen-webhook-tls"
        );
        task.abort();
    }
}
