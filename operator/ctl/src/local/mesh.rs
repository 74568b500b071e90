//! Starts the data plane of the local mesh in this process: the node agent in local-CA mode,
//! one sidecar ([`mizzen_proxy::app::App`]) per planned workload with explicit listeners on
//! loopback and its certificate from the agent, the demo app behind each demo workload, and a
//! client sidecar for the traffic driver. [`Mesh::stop`] takes it down in order.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use mizzen_demo::{Service, Settings};
use mizzen_proxy::app::App;
use mizzen_proxy::drain::Drain;
use mizzen_proxy::env::{AgentSettings, Config, InboundListener, OutboundListener, Workload};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::plan::{self, Destination, Plan};
use crate::state::StateDir;

/// How long a sidecar lets open requests finish when the mesh stops.
pub const DRAIN: Duration = Duration::from_secs(2);
/// How long the sidecars may take to get their first certificate.
pub const CERT_WAIT: Duration = Duration::from_secs(15);
/// The demo apps; a WorkloadEntry of another app is a process the user runs.
pub const DEMO_APPS: [&str; 3] = ["productpage", "reviews", "ratings"];
/// The traffic driver's own workload (and service account).
pub const DRIVER: &str = "traffic";

/// What the demo apps are told.
#[derive(Clone, Copy, Debug, Default)]
pub struct DemoOptions {
    /// reviews v2 answers this fraction of requests with 500 (`--faulty`).
    pub v2_error_rate: f64,
}

/// Where the traffic driver sends its requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its sidecar's outbound listener.
    pub listener: SocketAddr,
    /// The `Host` to send (productpage's service host and port).
    pub authority: String,
}

/// One running sidecar.
pub struct Sidecar {
    pub name: String,
    pub namespace: String,
    pub app: String,
    pub version: String,
    /// Its SPIFFE id.
    pub principal: String,
    /// Its `/stats/prometheus`.
    pub prometheus: SocketAddr,
    drain: Drain,
    ready: Box<dyn Fn() -> bool + Send + Sync>,
    task: JoinHandle<()>,
}

/// Everything running.
pub struct Mesh {
    pub sidecars: Vec<Sidecar>,
    /// The driver sidecar's listener for productpage, when the demo's productpage runs.
    pub entry: Option<Entry>,
    apps: Vec<JoinHandle<()>>,
    stop_apps: watch::Sender<bool>,
    agent: JoinHandle<()>,
    trust_domain: String,
}

impl Mesh {
    /// Starts the agent, then each workload's demo app and sidecar, then the driver's sidecar.
    pub async fn start(
        plan: &Plan,
        state: &StateDir,
        trust_domain: &str,
        demo: DemoOptions,
    ) -> anyhow::Result<Mesh> {
        let (workloads, skipped): (Vec<_>, Vec<_>) = plan
            .workloads
            .iter()
            .partition(|w| DEMO_APPS.contains(&w.app.as_str()));
        for w in skipped {
            // Only the demo's apps can be started here; callers would speak mTLS to a
            // process that does not.
            tracing::warn!(
                workload = %w.name,
                at = ?w.inbound,
                "not a demo app, so no sidecar runs for it: drop its `security.istio.io/tlsMode` \
                 label to have the mesh call your process there in plaintext"
            );
        }
        let driver_ns = plan
            .workloads
            .iter()
            .find(|w| w.app == "productpage")
            .map(|w| w.namespace.clone());
        let mut identities = BTreeMap::new();
        for w in &workloads {
            identities.insert(
                w.name.clone(),
                spiffe(trust_domain, &w.namespace, &w.service_account),
            );
        }
        if let Some(ns) = &driver_ns {
            identities.insert(DRIVER.to_string(), spiffe(trust_domain, ns, DRIVER));
        }
        state.issue_tokens(&identities)?;
        let agent = start_agent(state, trust_domain).await?;

        let (stop_apps, apps_stopped) = watch::channel(false);
        let mut mesh = Mesh {
            sidecars: Vec::new(),
            entry: None,
            apps: Vec::new(),
            stop_apps,
            agent,
            trust_domain: trust_domain.to_string(),
        };
        // Whatever started before a failure is stopped again.
        match mesh
            .add_workloads(plan, state, &workloads, driver_ns, demo, apps_stopped)
            .await
        {
            Ok(()) => Ok(mesh),
            Err(e) => {
                mesh.stop().await;
                Err(e)
            }
        }
    }

    /// Starts the demo apps and their sidecars, then the driver's sidecar, and waits for
    /// their certificates.
    async fn add_workloads(
        &mut self,
        plan: &Plan,
        state: &StateDir,
        workloads: &[&plan::Workload],
        driver_ns: Option<String>,
        demo: DemoOptions,
        apps_stopped: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        for w in workloads {
            let app = TcpListener::bind("127.0.0.1:0").await?;
            let app_addr = app.local_addr()?;
            let destinations = plan
                .destinations
                .get(&w.namespace)
                .cloned()
                .unwrap_or_default();
            let inbound = w
                .inbound
                .iter()
                .map(|listen| InboundListener {
                    listen: *listen,
                    app: app_addr,
                })
                .collect();
            let (sidecar, outbound) = self
                .start_sidecar(state, proxy_workload(w), &destinations, inbound)
                .await?;
            let settings = demo_settings(w, plan, &outbound, demo);
            let mut stopped = apps_stopped.clone();
            let span = tracing::info_span!("app", workload = %w.name);
            self.apps.push(tokio::spawn(
                async move {
                    let shutdown = async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    };
                    if let Err(e) = mizzen_demo::serve(app, settings, shutdown).await {
                        tracing::error!(error = %e, "demo app failed");
                    }
                }
                .instrument(span),
            ));
            self.sidecars.push(sidecar);
        }
        if let Some(ns) = driver_ns {
            let entry = plan.destination(&ns, "productpage").cloned();
            let destinations: Vec<Destination> = entry.iter().cloned().collect();
            let driver = plan::Workload {
                name: DRIVER.into(),
                namespace: ns,
                service_account: DRIVER.into(),
                app: DRIVER.into(),
                version: String::new(),
                labels: BTreeMap::from([("app".to_string(), DRIVER.to_string())]),
                inbound: Vec::new(),
            };
            let (sidecar, outbound) = self
                .start_sidecar(state, proxy_workload(&driver), &destinations, Vec::new())
                .await?;
            self.entry = entry.and_then(|d| {
                Some(Entry {
                    listener: *outbound.get(&d)?,
                    authority: format!("{}:{}", d.host, d.port),
                })
            });
            self.sidecars.push(sidecar);
        }
        self.wait_for_certificates().await
    }

    async fn start_sidecar(
        &self,
        state: &StateDir,
        workload: Workload,
        destinations: &[Destination],
        inbound: Vec<InboundListener>,
    ) -> anyhow::Result<(Sidecar, BTreeMap<Destination, SocketAddr>)> {
        let principal = spiffe(
            &self.trust_domain,
            &workload.namespace,
            &workload.service_account,
        );
        let name = workload.name.clone();
        let namespace = workload.namespace.clone();
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut config = Config::sidecar(state.config(&namespace), workload.clone());
        config.outbound_capture = None;
        config.inbound_capture = None;
        config.admin = None;
        config.health = None;
        config.prometheus = Some(loopback);
        config.drain = DRAIN;
        // One JSON line per request on stdout would bury the live view.
        config.access_log = false;
        config.outbound = destinations
            .iter()
            .map(|d| OutboundListener {
                listen: loopback,
                host: d.host.clone(),
                port: d.port,
            })
            .collect();
        config.inbound = inbound;
        config.agent = Some(AgentSettings {
            socket: state.socket(),
            token_file: state.token(&name),
        });
        let app = App::bind(config, None)
            .await
            .map_err(|e| anyhow::anyhow!("sidecar of {name}: {e}"))?;
        let outbound = destinations
            .iter()
            .cloned()
            .zip(app.bound.outbound.iter().copied())
            .collect();
        let prometheus = app.bound.prometheus.expect("the prometheus port is bound");
        let drain = app.shared.drain.clone();
        let tls = app.shared.tls.clone();
        let span = tracing::info_span!("proxy", workload = %name);
        let task = tokio::spawn(app.run().instrument(span));
        Ok((
            Sidecar {
                name,
                namespace,
                app: workload.app,
                version: workload.version,
                principal,
                prometheus,
                drain,
                ready: Box::new(move || tls.as_ref().is_some_and(|t| t.ready())),
                task,
            },
            outbound,
        ))
    }

    /// Waits until every sidecar holds its workload certificate, so the first requests do not
    /// fail for want of one.
    async fn wait_for_certificates(&self) -> anyhow::Result<()> {
        let all_ready = async {
            while !self.sidecars.iter().all(|s| (s.ready)()) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        if tokio::time::timeout(CERT_WAIT, all_ready).await.is_err() {
            let missing: Vec<&str> = self
                .sidecars
                .iter()
                .filter(|s| !(s.ready)())
                .map(|s| s.name.as_str())
                .collect();
            anyhow::bail!(
                "no certificate from the local agent within {CERT_WAIT:?} for {}",
                missing.join(", ")
            );
        }
        tracing::info!(
            sidecars = self.sidecars.len(),
            "every sidecar has its certificate"
        );
        Ok(())
    }

    /// Drains the sidecars (open requests finish), then stops the apps and the agent.
    pub async fn stop(self) {
        for s in &self.sidecars {
            s.drain.start();
        }
        for s in self.sidecars {
            if tokio::time::timeout(DRAIN * 2, s.task).await.is_err() {
                tracing::warn!(workload = %s.name, "sidecar did not stop in time");
            }
        }
        self.stop_apps.send_replace(true);
        for app in self.apps {
            let _ = tokio::time::timeout(DRAIN, app).await;
        }
        self.agent.abort();
        let _ = self.agent.await;
    }
}

fn spiffe(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// The sidecar's view of a planned workload (the tlsMode label is the endpoint's, not the
/// workload's).
fn proxy_workload(w: &plan::Workload) -> Workload {
    let mut labels = w.labels.clone();
    labels.remove(plan::TLS_MODE_LABEL);
    Workload {
        pod_name: w.name.clone(),
        namespace: w.namespace.clone(),
        service_account: w.service_account.clone(),
        name: w.name.clone(),
        app: w.app.clone(),
        version: w.version.clone(),
        labels,
        // One machine: every workload and endpoint is in the same (unnamed) place.
        locality: None,
    }
}

/// What the demo app of workload `w` runs: which service, and the URLs of the services it
/// calls — each service's own host (resolved to loopback), so the sidecars route and report
/// on the Host they would see in a cluster, with the port of this sidecar's listener for it.
fn demo_settings(
    w: &plan::Workload,
    plan: &Plan,
    outbound: &BTreeMap<Destination, SocketAddr>,
    demo: DemoOptions,
) -> Settings {
    let url = |app: &str| {
        let d = plan.destination(&w.namespace, app)?;
        Some(format!("http://{}:{}", d.host, outbound.get(d)?.port()))
    };
    let service = match w.app.as_str() {
        "productpage" => Service::Productpage {
            // Without a reviews service the page says why it has no reviews.
            reviews: url("reviews").unwrap_or_else(|| "http://reviews.invalid".into()),
        },
        "reviews" => Service::Reviews {
            ratings: url("ratings"),
            error_rate: if w.version == "v2" {
                demo.v2_error_rate
            } else {
                0.0
            },
        },
        _ => Service::Ratings,
    };
    Settings {
        service,
        version: if w.version.is_empty() {
            mizzen_demo::DEFAULT_VERSION.into()
        } else {
            w.version.clone()
        },
        hosts: outbound
            .iter()
            .map(|(d, a)| (d.host.clone(), a.ip()))
            .collect(),
    }
}

/// Runs the node agent in local-CA mode and waits for its socket.
async fn start_agent(state: &StateDir, trust_domain: &str) -> anyhow::Result<JoinHandle<()>> {
    let options = mizzen_agent::run::Options {
        socket: state.socket(),
        node: "local".into(),
        trust_domain: trust_domain.to_string(),
        workload_ttl: Duration::from_secs(3600),
        metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        mode: mizzen_agent::run::Mode::Local {
            ca_dir: state.ca(),
            identities: state.identities(),
        },
    };
    let task = tokio::spawn(
        async move {
            if let Err(e) = mizzen_agent::run::run(options).await {
                tracing::error!(error = %format!("{e:#}"), "node agent stopped");
            }
        }
        .instrument(tracing::info_span!("agent")),
    );
    let socket = state.socket();
    let up = async {
        while !socket.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), up)
        .await
        .is_err()
    {
        task.abort();
        anyhow::bail!("the local node agent did not open {}", socket.display());
    }
    Ok(task)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(app: &str) -> Destination {
        Destination {
            host: format!("{app}.shop.svc.cluster.local"),
            port: 9080,
            app: Some(app.into()),
        }
    }

    fn workload(app: &str, version: &str) -> plan::Workload {
        plan::Workload {
            name: format!("{app}-{version}"),
            namespace: "shop".into(),
            service_account: app.into(),
            app: app.into(),
            version: version.into(),
            labels: BTreeMap::new(),
            inbound: Vec::new(),
        }
    }

    #[test]
    fn demo_apps_call_services_by_name_through_their_sidecar() {
        let plan = Plan {
            workloads: Vec::new(),
            destinations: BTreeMap::from([(
                "shop".to_string(),
                vec![destination("ratings"), destination("reviews")],
            )]),
        };
        let outbound = BTreeMap::from([
            (destination("ratings"), "127.0.0.1:41001".parse().unwrap()),
            (destination("reviews"), "127.0.0.1:41002".parse().unwrap()),
        ]);
        let faulty = DemoOptions { v2_error_rate: 0.2 };
        let page = demo_settings(&workload("productpage", "v1"), &plan, &outbound, faulty);
        assert_eq!(
            page.service,
            Service::Productpage {
                reviews: "http://reviews.shop.svc.cluster.local:41002".into()
            }
        );
        assert_eq!(
            page.hosts["ratings.shop.svc.cluster.local"].to_string(),
            "127.0.0.1"
        );
        let v2 = demo_settings(&workload("reviews", "v2"), &plan, &outbound, faulty);
        assert_eq!(
            v2.service,
            Service::Reviews {
                ratings: Some("http://ratings.shop.svc.cluster.local:41001".into()),
                error_rate: 0.2,
            }
        );
        assert_eq!(v2.version, "v2");
        let v3 = demo_settings(&workload("reviews", "v3"), &plan, &outbound, faulty);
        assert!(matches!(v3.service, Service::Reviews { error_rate, .. } if error_rate == 0.0));
        let ratings = demo_settings(&workload("ratings", ""), &plan, &outbound, faulty);
        assert_eq!(
            (ratings.service, ratings.version.as_str()),
            (Service::Ratings, "v1")
        );
    }
}
