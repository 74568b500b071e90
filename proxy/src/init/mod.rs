//! `mizzen-proxy init`: the pod's init container. Installs the iptables rules that send the
//! app's TCP traffic through the sidecar (outbound to 15001, inbound to 15006), then exits.
//!
//! - [`spec`]: the flags the injector passes (`docs/injection.md`), parsed and checked;
//! - [`rules`]: the pure rule generator (spec → `iptables-restore` text), golden-tested;
//! - [`backend`]: which iptables variant (nft or legacy) to drive, decided from probes;
//! - [`install`]: the thin shell that probes, decides and runs `iptables-restore`.

pub mod backend;
pub mod install;
pub mod rules;
pub mod spec;

use spec::{Cidr, Port, Set, Spec};

/// The flags of `mizzen-proxy init`. The injector passes every one (an empty value is "none",
/// `*` is "all"); the defaults are what it passes for a pod without traffic annotations.
#[derive(Clone, Debug, clap::Args)]
pub struct InitArgs {
    /// The proxy's UID: its traffic is never captured.
    #[arg(long, default_value_t = 1337)]
    pub proxy_uid: u32,
    /// The proxy's GID, skipped the same way (default: the UID).
    #[arg(long)]
    pub proxy_gid: Option<u32>,
    #[arg(long, default_value_t = 15006)]
    pub inbound_capture_port: u16,
    #[arg(long, default_value_t = 15001)]
    pub outbound_capture_port: u16,
    /// Inbound ports sent to the proxy: `*`, a list, or empty for none.
    #[arg(long, default_value = "*", value_name = "*|PORTS")]
    pub include_inbound_ports: Set<Port>,
    #[arg(long, default_value = "15020,15021,15090", value_name = "*|PORTS")]
    pub exclude_inbound_ports: Set<Port>,
    /// Outbound destinations sent to the proxy: `*`, CIDRs, or empty for none.
    #[arg(long, default_value = "*", value_name = "*|CIDRS")]
    pub include_outbound_ip_ranges: Set<Cidr>,
    #[arg(long, default_value = "", value_name = "*|CIDRS")]
    pub exclude_outbound_ip_ranges: Set<Cidr>,
    /// Outbound ports sent to the proxy whatever their address.
    #[arg(long, default_value = "", value_name = "*|PORTS")]
    pub include_outbound_ports: Set<Port>,
    #[arg(long, default_value = "", value_name = "*|PORTS")]
    pub exclude_outbound_ports: Set<Port>,
    /// Which iptables to use (see `init::backend` for what `auto` picks).
    #[arg(long, value_enum, default_value_t = backend::Choice::Auto)]
    pub iptables_backend: backend::Choice,
    /// Print the rules that would be installed and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl InitArgs {
    pub fn spec(&self) -> Spec {
        Spec {
            proxy_uid: self.proxy_uid,
            proxy_gid: self.proxy_gid.unwrap_or(self.proxy_uid),
            inbound_capture_port: self.inbound_capture_port,
            outbound_capture_port: self.outbound_capture_port,
            include_inbound_ports: self.include_inbound_ports.clone(),
            exclude_inbound_ports: self.exclude_inbound_ports.clone(),
            include_outbound_ip_ranges: self.include_outbound_ip_ranges.clone(),
            exclude_outbound_ip_ranges: self.exclude_outbound_ip_ranges.clone(),
            include_outbound_ports: self.include_outbound_ports.clone(),
            exclude_outbound_ports: self.exclude_outbound_ports.clone(),
        }
    }
}

/// Runs `mizzen-proxy init`: logs the spec, installs (or with `--dry-run` prints) the rules.
pub fn run(args: &InitArgs) -> Result<(), install::InitError> {
    let spec = args.spec();
    tracing::info!(?spec, dry_run = args.dry_run, "mizzen-proxy init");
    let installed = install::install(&spec, args.iptables_backend, args.dry_run)?;
    if args.dry_run {
        print!("{}", installed.nat_v4);
        if let Some(guard) = &installed.ipv6_guard {
            print!("{guard}");
        }
        return Ok(());
    }
    tracing::info!(
        backend = %installed.backend,
        rules = %installed.nat_v4,
        ipv6_guard = installed.ipv6_guard.as_deref().unwrap_or("none (no global IPv6 address or no inbound capture)"),
        "iptables rules installed"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        init: InitArgs,
    }

    fn spec(args: &[&str]) -> Result<Spec, clap::Error> {
        Cli::try_parse_from(std::iter::once("init").chain(args.iter().copied()))
            .map(|c| c.init.spec())
    }

    #[test]
    fn defaults_are_what_the_injector_passes_for_a_plain_pod() {
        assert_eq!(spec(&[]).unwrap(), Spec::injector_default());
    }

    #[test]
    fn parses_the_injectors_arguments_with_empty_values() {
        // As webhook/src/inject writes them: every flag, each value its own argument.
        let args = [
            "--proxy-uid",
            "1337",
            "--inbound-capture-port",
            "15006",
            "--outbound-capture-port",
            "15001",
            "--include-inbound-ports",
            "*",
            "--exclude-inbound-ports",
            "15020,15021,15090,8081",
            "--include-outbound-ip-ranges",
            "10.96.0.0/12",
            "--exclude-outbound-ip-ranges",
            "",
            "--include-outbound-ports",
            "",
            "--exclude-outbound-ports",
            "5432",
        ];
        let s = spec(&args).unwrap();
        assert_eq!(
            s.exclude_inbound_ports.listed(),
            &[Port(15020), Port(15021), Port(15090), Port(8081)]
        );
        assert_eq!(
            s.include_outbound_ip_ranges,
            Set::Only(vec!["10.96.0.0/12".parse().unwrap()])
        );
        assert!(s.exclude_outbound_ip_ranges.is_empty());
        assert!(s.include_outbound_ports.is_empty());
        assert_eq!(s.exclude_outbound_ports, Set::Only(vec![Port(5432)]));
        assert_eq!(s.proxy_gid, 1337);
    }

    #[test]
    fn a_bad_value_names_the_flag_and_the_value() {
        let err = spec(&["--exclude-outbound-ip-ranges", "10.0.0.1"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--exclude-outbound-ip-ranges"), "{err}");
        assert!(err.contains("\"10.0.0.1\" is not a CIDR range"), "{err}");
    }
}
