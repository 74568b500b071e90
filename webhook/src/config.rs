//! The webhook's command line (each flag with an environment fallback), parsed once into a
//! [`Config`].

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{ArgAction, Parser};

use crate::inject::{DEFAULT_HUB, InjectSettings};

fn default_proxy_image() -> String {
    format!("{DEFAULT_HUB}/mizzen-proxy:{}", env!("CARGO_PKG_VERSION"))
}

/// `mizzen-webhook`: Mizzen's admission webhook (sidecar injection and validation), HTTPS only.
#[derive(Clone, Debug, Parser)]
#[command(name = "mizzen-webhook", version)]
pub struct Args {
    /// Address to serve HTTPS on.
    #[arg(long, env = "MIZZEN_WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// PEM certificate chain to serve (re-read when it changes).
    #[arg(
        long,
        env = "MIZZEN_WEBHOOK_TLS_CERT",
        default_value = "/etc/mizzen/tls/tls.crt"
    )]
    pub tls_cert: PathBuf,
    /// PEM private key of the certificate (re-read when it changes).
    #[arg(
        long,
        env = "MIZZEN_WEBHOOK_TLS_KEY",
        default_value = "/etc/mizzen/tls/tls.key"
    )]
    pub tls_key: PathBuf,
    /// Image of the injected proxy and its init container.
    #[arg(long, env = "MIZZEN_PROXY_IMAGE", default_value_t = default_proxy_image())]
    pub proxy_image: String,
    /// Inject the proxy as a native sidecar (Kubernetes 1.29+); `false` makes it the first
    /// regular container, holding the application until the proxy is ready.
    #[arg(long, env = "MIZZEN_NATIVE_SIDECAR", default_value_t = true, action = ArgAction::Set)]
    pub native_sidecar: bool,
    /// How often to look for a new certificate on disk, in milliseconds.
    #[arg(long, env = "MIZZEN_WEBHOOK_CERT_POLL_MS", default_value_t = 2000)]
    pub cert_poll_ms: u64,
}

/// Everything the server needs, checked.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub cert_poll: Duration,
    pub inject: InjectSettings,
}

impl Args {
    pub fn into_config(self) -> anyhow::Result<Config> {
        let image = self.proxy_image.trim();
        anyhow::ensure!(
            !image.is_empty() && !image.contains(char::is_whitespace),
            "--proxy-image {:?} is not an image reference",
            self.proxy_image
        );
        anyhow::ensure!(self.cert_poll_ms > 0, "--cert-poll-ms must be above 0");
        Ok(Config {
            listen: self.listen,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            cert_poll: Duration::from_millis(self.cert_poll_ms),
            inject: InjectSettings {
                proxy_image: image.to_string(),
                native_sidecar: self.native_sidecar,
                ..InjectSettings::default()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_as_the_manifest_passes_them() {
        let args = Args::try_parse_from([
            "mizzen-webhook",
            "--listen",
            "0.0.0.0:8443",
            "--tls-cert",
            "/etc/mizzen/tls/tls.crt",
            "--tls-key",
            "/etc/mizzen/tls/tls.key",
            "--proxy-image",
            "ghcr.io/mizzen-mesh/mizzen-proxy:0.1.0",
        ])
        .unwrap();
        let c = args.into_config().unwrap();
        assert_eq!(c.listen.port(), 8443);
        assert_eq!(
            c.inject.proxy_image,
            "ghcr.io/mizzen-mesh/mizzen-proxy:0.1.0"
        );
        assert!(c.inject.native_sidecar);
        assert_eq!(c.cert_poll, Duration::from_secs(2));

        let c = Args::try_parse_from(["mizzen-webhook", "--native-sidecar", "false"])
            .unwrap()
            .into_config()
            .unwrap();
        assert!(!c.inject.native_sidecar);
        let err = Args::try_parse_from(["mizzen-webhook", "--proxy-image", " "])
            .unwrap()
            .into_config()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--proxy-image \" \" is not an image reference"
        );
    }
}
