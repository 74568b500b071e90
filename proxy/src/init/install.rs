//! The thin shell around [`super::rules`]: asks the installed iptables what is there, picks the
//! variant ([`super::backend`]), and hands the rules to `iptables-restore --noflush` in one
//! transaction (all or nothing: a rejected rule leaves the namespace as it was).

use std::{
    io::Write,
    process::{Command, Stdio},
};

use super::{
    backend::{self, Backend, Choice, Family, Probe},
    rules::{self, Hooks},
    spec::Spec,
};

/// Why the rules could not be installed. Each says which program and what it answered.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(
        "cannot run {program}: {source} (is iptables installed in the proxy image and on PATH?)"
    )]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error(
        "{program} --noflush refused the rules ({status}): {stderr}\n\
         (the init container needs the NET_ADMIN and NET_RAW capabilities)\nthe rules were:\n{rules}"
    )]
    Restore {
        program: String,
        status: std::process::ExitStatus,
        stderr: String,
        rules: String,
    },
}

/// What was installed (or, in a dry run, would be).
#[derive(Debug)]
pub struct Installed {
    pub backend: Backend,
    /// The `nat` rules given to `iptables-restore`.
    pub nat_v4: String,
    /// The IPv6 guard given to `ip6tables-restore`, when the pod has a global IPv6 address and
    /// inbound capture is on.
    pub ipv6_guard: Option<String>,
}

/// Installs the rules of `spec` in the current network namespace. `dry_run` decides and
/// returns the rules without changing anything.
pub fn install(spec: &Spec, choice: Choice, dry_run: bool) -> Result<Installed, InitError> {
    let probe = Probe {
        nft: save(&Backend::Nft.program(Family::V4, "save"), None)
            .map(|s| backend::count_rules(&s)),
        legacy: save(&Backend::Legacy.program(Family::V4, "save"), None)
            .map(|s| backend::count_rules(&s)),
    };
    let backend = backend::choose(choice, probe);
    tracing::info!(?probe, %backend, "iptables variant");

    let previous = Hooks::from_save(
        &save(&backend.program(Family::V4, "save"), Some("nat")).unwrap_or_default(),
    );
    let nat_v4 = rules::nat_v4(spec, &previous);

    let ipv6 = std::fs::read_to_string("/proc/net/if_inet6")
        .map(|t| has_global_ipv6(&t))
        .unwrap_or(false);
    let ipv6_guard = if ipv6 {
        let previous = Hooks::from_save(
            &save(&backend.program(Family::V6, "save"), Some("filter")).unwrap_or_default(),
        );
        rules::ipv6_guard(spec, &previous)
    } else {
        None
    };

    if !dry_run {
        restore(&backend.program(Family::V4, "restore"), &nat_v4)?;
        if let Some(guard) = &ipv6_guard {
            restore(&backend.program(Family::V6, "restore"), guard)?;
        }
    }
    Ok(Installed {
        backend,
        nat_v4,
        ipv6_guard,
    })
}

/// `<program> [-t table]`'s output, or `None` when it cannot run or fails (not installed, the
/// kernel lacks that variant, no permission).
fn save(program: &str, table: Option<&str>) -> Option<String> {
    let mut cmd = Command::new(program);
    if let Some(table) = table {
        cmd.args(["-t", table]);
    }
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn restore(program: &str, text: &str) -> Result<(), InitError> {
    let spawn = |source| InitError::Spawn {
        program: program.to_string(),
        source,
    };
    let mut child = Command::new(program)
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn)?;
    // Write all of it before waiting; the rules are a few kilobytes at most.
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).map_err(spawn)?;
    }
    let out = child.wait_with_output().map_err(spawn)?;
    if out.status.success() {
        return Ok(());
    }
    Err(InitError::Restore {
        program: program.to_string(),
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        rules: text.to_string(),
    })
}

/// Whether `/proc/net/if_inet6` lists an address of global scope (scope `00`; unique local
/// `fd00::/8` addresses are global scope too) on an interface other than loopback. Link-local
/// addresses (`fe80::/10`, which every IPv6-enabled interface has) do not count: only a peer on
/// the same link could use them, and treating them as "the pod has IPv6" would put the guard in
/// every IPv4-only pod.
pub fn has_global_ipv6(if_inet6: &str) -> bool {
    if_inet6.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        matches!(fields.as_slice(), [_, _, _, "00", _, ifname] if *ifname != "lo")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_global_ipv6_addresses_off_loopback_count() {
        let lo_and_link_local = "00000000000000000000000000000001 01 80 10 80       lo\n\
                                 fe800000000000000c7dbafffe2c9d4e 02 40 20 80     eth0\n";
        assert!(!has_global_ipv6(lo_and_link_local));
        let ula =
            format!("{lo_and_link_local}fd000000000000000000000000000002 02 40 00 80     eth0\n");
        assert!(has_global_ipv6(&ula));
        assert!(!has_global_ipv6(""));
    }
}
