//! The broker's security settings, checked before it binds: who may connect (SASL users, or an
//! explicit `allow_anonymous`) and how (TLS certificate and key). Errors say what is wrong and
//! what to pass instead.

use std::path::{Path, PathBuf};

use crate::config::ServerConfig;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecurityError {
    #[error(
        "refusing to serve {listen} without authentication: any host that reaches it could read \
         and write every topic. Configure SASL users (sasl_users / --sasl-users FILE), or pass \
         allow_anonymous (--allow-anonymous) to serve it open anyway, or listen on a loopback \
         address such as 127.0.0.1"
    )]
    AnonymousNotLoopback { listen: std::net::SocketAddr },

    #[error(
        "metrics on {listen} would be open to anyone who can reach it (topic names, groups, \
         offsets and lag; the metrics endpoint has no authentication): listen on a loopback \
         address, or pass --allow-anonymous / allow_anonymous=True to mean it"
    )]
    MetricsNotLoopback { listen: std::net::SocketAddr },

    #[error(
        "TLS needs both a certificate chain and its private key: {given} is set but {missing} \
         is not (pass both --tls-cert and --tls-key, or neither)"
    )]
    TlsHalfConfigured {
        given: &'static str,
        missing: &'static str,
    },

    #[error("cannot read the {what} {path}: {source}")]
    Unreadable {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "the SASL users file {path} is open to other users (mode {mode:o}: {}); it holds \
         passwords: make it private with `chmod 600 {path}`",
        open_to(*mode)
    )]
    UsersFileOpenToOthers { path: PathBuf, mode: u32 },

    #[error("SASL users file {path}, line {line}: {reason}")]
    UsersFile {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    #[error("SASL users file {path} defines no user; add lines of the form `user:password`")]
    NoUsers { path: PathBuf },

    #[error("TLS {what} {path}: {reason}")]
    Tls {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },

    #[error("no randomness from the operating system: {0}")]
    Randomness(String),
}

/// Refuse a non-loopback `listen` unless SASL users are configured or allow_anonymous is set;
/// TLS cert and key both or neither; files readable. The message says why and what to pass.
pub fn check_config(config: &ServerConfig) -> Result<(), SecurityError> {
    if !config.listen.ip().is_loopback() && config.sasl_users.is_none() && !config.allow_anonymous {
        return Err(SecurityError::AnonymousNotLoopback {
            listen: config.listen,
        });
    }
    if let Some(m) = config.metrics_listen {
        if !m.ip().is_loopback() && !config.allow_anonymous {
            return Err(SecurityError::MetricsNotLoopback { listen: m });
        }
    }
    match (&config.tls_cert, &config.tls_key) {
        (Some(_), None) => {
            return Err(SecurityError::TlsHalfConfigured {
                given: "the certificate (tls_cert)",
                missing: "the private key (tls_key)",
            })
        }
        (None, Some(_)) => {
            return Err(SecurityError::TlsHalfConfigured {
                given: "the private key (tls_key)",
                missing: "the certificate (tls_cert)",
            })
        }
        _ => {}
    }
    let files = [
        ("SASL users file", &config.sasl_users),
        ("TLS certificate", &config.tls_cert),
        ("TLS private key", &config.tls_key),
    ];
    for (what, path) in files {
        if let Some(path) = path {
            readable(what, path)?;
        }
    }
    Ok(())
}

/// Reads a whole file, naming it and its role on failure.
pub(crate) fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|source| SecurityError::Unreadable {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn readable(what: &'static str, path: &Path) -> Result<(), SecurityError> {
    let unreadable = |source| SecurityError::Unreadable {
        what,
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if !meta.is_file() {
        return Err(unreadable(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    std::fs::File::open(path).map_err(unreadable)?;
    Ok(())
}

/// What a file mode lets the group and others do, e.g. "readable by the group, writable by others".
fn open_to(mode: u32) -> String {
    let mut parts = Vec::new();
    for (shift, who) in [(3, "the group"), (0, "others")] {
        let bits = (mode >> shift) & 0o7;
        let can: Vec<&str> = [(0o4, "readable"), (0o2, "writable"), (0o1, "executable")]
            .iter()
            .filter(|(b, _)| bits & b != 0)
            .map(|(_, w)| *w)
            .collect();
        if !can.is_empty() {
            parts.push(format!("{} by {who}", can.join(" and ")));
        }
    }
    parts.join(", ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(listen: &str) -> ServerConfig {
        ServerConfig {
            listen: listen.parse().unwrap(),
            ..ServerConfig::default()
        }
    }

    #[test]
    fn loopback_needs_nothing_other_addresses_need_users_or_consent() {
        check_config(&config("127.0.0.1:9092")).unwrap();
        check_config(&config("[::1]:9092")).unwrap();
        for open in ["0.0.0.0:9092", "[::]:0", "192.168.1.5:9092"] {
            let e = check_config(&config(open)).unwrap_err();
            assert!(matches!(e, SecurityError::AnonymousNotLoopback { .. }));
            let msg = e.to_string();
            assert!(
                msg.contains(open.trim_end_matches(":0")) && msg.contains("--sasl-users"),
                "{msg}"
            );
            assert!(msg.contains("--allow-anonymous"), "{msg}");
            let mut c = config(open);
            c.allow_anonymous = true;
            check_config(&c).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        std::fs::write(&users, "alice:secret\n").unwrap();
        let mut c = config("0.0.0.0:9092");
        c.sasl_users = Some(users);
        check_config(&c).unwrap();
    }

    #[test]
    fn tls_needs_both_files_and_readable_ones() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "x").unwrap();
        let mut c = config("127.0.0.1:9092");
        c.tls_cert = Some(cert.clone());
        let e = check_config(&c).unwrap_err();
        assert!(e.to_string().contains("tls_key"), "{e}");
        c.tls_cert = None;
        c.tls_key = Some(cert.clone());
        let e = check_config(&c).unwrap_err();
        assert!(e.to_string().contains("tls_cert"), "{e}");
        c.tls_cert = Some(dir.path().join("missing.pem"));
        let e = check_config(&c).unwrap_err();
        assert!(
            matches!(&e, SecurityError::Unreadable { what: "TLS certificate", path, .. } if path.ends_with("missing.pem")),
            "{e}"
        );
        c.tls_cert = Some(cert);
        c.tls_key = Some(dir.path().to_path_buf());
        let e = check_config(&c).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn a_users_file_mode_is_named_for_what_it_allows() {
        assert_eq!(open_to(0o644), "readable by the group, readable by others");
        assert_eq!(open_to(0o602), "writable by others");
        assert_eq!(open_to(0o660), "readable and writable by the group");
    }
}
