//! Which iptables to drive: the nf_tables variant (`iptables-nft`) or the legacy x_tables one.
//!
//! Both can be installed, and the kernel runs the rules of both, but tools and people read one
//! at a time: rules written with the other are invisible to `iptables-save` and to whoever
//! debugs the pod. The rule, decided once here:
//!
//! 1. `--iptables-backend nft|legacy` wins;
//! 2. otherwise the variant that already has rules in this network namespace (the one with more
//!    rules, when both have some) — what the node's tooling or a previous run used, as Istio
//!    decides;
//! 3. otherwise nft, when its `iptables-nft-save` works (the default of every current
//!    distribution, and the one that needs no lock file, so it works on the read-only root
//!    filesystem the injector gives the init container), else legacy;
//! 4. when neither variant's binaries are installed, the unsuffixed `iptables-restore` (an image
//!    with only one variant, e.g. Alpine's).

use std::fmt;

/// A family of iptables binaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Nft,
    Legacy,
    /// The unsuffixed binaries, whatever variant they are.
    Default,
}

/// `--iptables-backend`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Choice {
    #[default]
    Auto,
    Nft,
    Legacy,
}

/// IPv4 or IPv6 binaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Backend {
    /// `iptables-nft-restore`, `ip6tables-legacy-save`, ...
    pub fn program(self, family: Family, tool: &str) -> String {
        let base = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        match self {
            Backend::Nft => format!("{base}-nft-{tool}"),
            Backend::Legacy => format!("{base}-legacy-{tool}"),
            Backend::Default => format!("{base}-{tool}"),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
            Backend::Default => "default",
        })
    }
}

/// What `<variant>-save` said in this namespace: `None` when it could not run (not installed,
/// or the kernel lacks the variant), else the number of rules (`-A` lines) it printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Probe {
    pub nft: Option<usize>,
    pub legacy: Option<usize>,
}

/// Counts the rules in `iptables-save` output.
pub fn count_rules(save: &str) -> usize {
    save.lines().filter(|l| l.starts_with("-A ")).count()
}

/// Applies the rule in the module documentation.
pub fn choose(choice: Choice, probe: Probe) -> Backend {
    match choice {
        Choice::Nft => Backend::Nft,
        Choice::Legacy => Backend::Legacy,
        Choice::Auto => match (probe.nft, probe.legacy) {
            (Some(n), Some(l)) if l > n => Backend::Legacy,
            (Some(_), _) => Backend::Nft,
            (None, Some(_)) => Backend::Legacy,
            (None, None) => Backend::Default,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variant_with_rules_wins_else_nft() {
        let p = |nft, legacy| Probe { nft, legacy };
        assert_eq!(choose(Choice::Auto, p(Some(0), Some(0))), Backend::Nft);
        assert_eq!(choose(Choice::Auto, p(Some(0), Some(12))), Backend::Legacy);
        assert_eq!(choose(Choice::Auto, p(Some(12), Some(3))), Backend::Nft);
        assert_eq!(choose(Choice::Auto, p(Some(4), Some(4))), Backend::Nft);
        assert_eq!(choose(Choice::Auto, p(None, Some(0))), Backend::Legacy);
        assert_eq!(choose(Choice::Auto, p(None, None)), Backend::Default);
        assert_eq!(choose(Choice::Legacy, p(Some(9), None)), Backend::Legacy);
        assert_eq!(choose(Choice::Nft, p(None, Some(9))), Backend::Nft);
    }

    #[test]
    fn program_names() {
        assert_eq!(
            Backend::Nft.program(Family::V4, "restore"),
            "iptables-nft-restore"
        );
        assert_eq!(
            Backend::Legacy.program(Family::V6, "save"),
            "ip6tables-legacy-save"
        );
        assert_eq!(
            Backend::Default.program(Family::V4, "restore"),
            "iptables-restore"
        );
    }

    #[test]
    fn counts_only_rules() {
        let save =
            "# Generated\n*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j X\n-A X -j RETURN\nCOMMIT\n";
        assert_eq!(count_rules(save), 2);
    }
}
