//! The SASL users file: who may connect, and the credentials derived from their passwords.
//!
//! Format: UTF-8 text, one `user:password` per line; the username ends at the first `:`, the
//! password is the rest of the line (it may contain `:`; a trailing `\r` is dropped). Blank lines
//! and lines starting with `#` are ignored. Usernames are unique and non-empty, passwords
//! non-empty.
//!
//! ```text
//! # riverbed serve --sasl-users users.txt
//! alice:correct horse battery staple
//! ingest-service:Zu8:rTq
//! ```
//!
//! The file holds passwords in clear (as Kafka's JAAS file does for PLAIN), so on Unix it must
//! not be readable by group or others: it is refused (like the checkpoint key) rather than
//! warned about, because a warning in a server log is easy to miss and the fix is one `chmod`.
//!
//! At load, each password becomes SCRAM credentials (random salt, 4096 PBKDF2 iterations) for
//! SHA-256 and SHA-512; passwords are not kept. PLAIN checks a password against the SHA-256
//! credential.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::scram::{ScramCredential, ScramHash, ITERATIONS, SALT_LEN};
use crate::security::{read_file, SecurityError};

struct UserCredentials {
    sha256: ScramCredential,
    sha512: ScramCredential,
}

/// The users a SASL session authenticates against.
pub struct Users {
    by_name: HashMap<String, UserCredentials>,
    /// Keys the stand-in salts of unknown users, so they look stable but reveal nothing.
    secret: [u8; 32],
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users")
            .field("count", &self.by_name.len())
            .finish_non_exhaustive()
    }
}

fn random<const N: usize>() -> Result<[u8; N], SecurityError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| SecurityError::Randomness(e.to_string()))?;
    Ok(b)
}

impl Users {
    /// Loads and checks the users file (see the module documentation for its format).
    pub fn load(path: &Path) -> Result<Arc<Users>, SecurityError> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(|source| SecurityError::Unreadable {
                    what: "SASL users file",
                    path: path.to_path_buf(),
                    source,
                })?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(SecurityError::UsersFileOpenToOthers {
                    path: path.to_path_buf(),
                    mode: mode & 0o777,
                });
            }
        }
        let bytes = read_file("SASL users file", path)?;
        let bad = |line: usize, reason: &str| SecurityError::UsersFile {
            path: path.to_path_buf(),
            line,
            reason: reason.to_string(),
        };
        let text = String::from_utf8(bytes).map_err(|e| {
            let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            bad(line, "not UTF-8")
        })?;
        let mut entries: Vec<(String, String)> = Vec::new();
        for (i, raw) in text.split('\n').enumerate() {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            // Messages never quote the line: it holds a password.
            let Some((user, password)) = line.split_once(':') else {
                return Err(bad(i + 1, "expected `user:password`"));
            };
            if user.is_empty() {
                return Err(bad(i + 1, "empty username"));
            }
            if user.trim() != user || user.chars().any(char::is_control) {
                return Err(bad(
                    i + 1,
                    "the username has surrounding spaces or control characters",
                ));
            }
            if password.is_empty() {
                return Err(bad(i + 1, "empty password"));
            }
            if entries.iter().any(|(u, _)| u == user) {
                return Err(bad(i + 1, &format!("user {user:?} is defined twice")));
            }
            entries.push((user.to_string(), password.to_string()));
        }
        if entries.is_empty() {
            return Err(SecurityError::NoUsers {
                path: path.to_path_buf(),
            });
        }
        Users::from_passwords(entries.iter().map(|(u, p)| (u.as_str(), p.as_str())))
    }

    /// Users from (name, password) pairs, credentials derived as `load` does.
    pub fn from_passwords<'a>(
        users: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Arc<Users>, SecurityError> {
        let mut by_name = HashMap::new();
        for (user, password) in users {
            let creds = UserCredentials {
                sha256: ScramCredential::derive(
                    ScramHash::Sha256,
                    password.as_bytes(),
                    &random::<SALT_LEN>()?,
                    ITERATIONS,
                ),
                sha512: ScramCredential::derive(
                    ScramHash::Sha512,
                    password.as_bytes(),
                    &random::<SALT_LEN>()?,
                    ITERATIONS,
                ),
            };
            by_name.insert(user.to_string(), creds);
        }
        Ok(Arc::new(Users {
            by_name,
            secret: random()?,
        }))
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The user's SCRAM credential for `hash`.
    pub fn scram(&self, user: &str, hash: ScramHash) -> Option<ScramCredential> {
        self.by_name.get(user).map(|c| match hash {
            ScramHash::Sha256 => c.sha256.clone(),
            ScramHash::Sha512 => c.sha512.clone(),
        })
    }

    /// A credential for a user that does not exist: a salt that is the same on every attempt
    /// for that name (as a real user's is), and keys no password matches.
    pub fn stand_in(&self, user: &str, hash: ScramHash) -> ScramCredential {
        use hmac::{Hmac, Mac};
        let keyed = |what: &str| -> Vec<u8> {
            match Hmac::<sha2::Sha256>::new_from_slice(&self.secret) {
                Ok(mut m) => {
                    m.update(what.as_bytes());
                    m.update(hash.mechanism().as_bytes());
                    m.update(user.as_bytes());
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => vec![0; 32],
            }
        };
        ScramCredential {
            salt: keyed("salt")[..SALT_LEN].to_vec(),
            iterations: ITERATIONS,
            stored_key: keyed("stored"),
            server_key: keyed("server"),
        }
    }

    /// PLAIN: whether `password` is `user`'s. An unknown user costs the same PBKDF2 work.
    pub fn check_password(&self, user: &str, password: &str) -> bool {
        match self.by_name.get(user) {
            Some(c) => c
                .sha256
                .matches_password(ScramHash::Sha256, password.as_bytes()),
            None => {
                let _ = self
                    .stand_in(user, ScramHash::Sha256)
                    .matches_password(ScramHash::Sha256, password.as_bytes());
                false
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str, mode: u32) -> std::path::PathBuf {
        let p = dir.join("users");
        std::fs::write(&p, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        p
    }

    #[test]
    fn loads_users_and_checks_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "# comment\n\nalice:s3cret\r\nbob:pa:ss:word\n  \n",
            0o600,
        );
        let users = Users::load(&p).unwrap();
        assert_eq!(users.len(), 2);
        assert!(users.check_password("alice", "s3cret"));
        assert!(!users.check_password("alice", "s3cret\r"));
        assert!(!users.check_password("alice", "S3cret"));
        assert!(users.check_password("bob", "pa:ss:word"));
        assert!(!users.check_password("carol", "s3cret"));
        // Salts are random per user and mechanism; stand-ins are stable per name.
        let a = users.scram("alice", ScramHash::Sha256).unwrap();
        let b = users.scram("bob", ScramHash::Sha256).unwrap();
        assert_ne!(a.salt, b.salt);
        assert_eq!(a.iterations, 4096);
        assert_eq!(
            users.stand_in("carol", ScramHash::Sha512).salt,
            users.stand_in("carol", ScramHash::Sha512).salt
        );
        assert_ne!(
            users.stand_in("carol", ScramHash::Sha512).salt,
            users.stand_in("dave", ScramHash::Sha512).salt
        );
    }

    #[test]
    fn bad_files_name_the_line_and_never_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("alice:x\nnocolonhunter2\n", 2, "expected `user:password`"),
            ("alice:x\n:hunter2\n", 2, "empty username"),
            ("alice:\n", 1, "empty password"),
            ("alice:x\n\nalice:hunter2\n", 3, "defined twice"),
            (" alice:hunter2\n", 1, "surrounding spaces"),
        ];
        for (text, line, why) in cases {
            let p = write(dir.path(), text, 0o600);
            let e = Users::load(&p).unwrap_err();
            let msg = e.to_string();
            assert!(
                matches!(e, SecurityError::UsersFile { line: l, .. } if l == line),
                "{text:?}: {msg}"
            );
            assert!(msg.contains(why), "{msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        }
        let p = write(dir.path(), "# nobody\n", 0o600);
        assert!(matches!(
            Users::load(&p).unwrap_err(),
            SecurityError::NoUsers { .. }
        ));
        assert!(matches!(
            Users::load(&dir.path().join("missing")).unwrap_err(),
            SecurityError::Unreadable { .. }
        ));
    }

    #[cfg(unix)]
    #[test]
    fn a_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604] {
            let p = write(dir.path(), "alice:x\n", mode);
            let e = Users::load(&p).unwrap_err();
            assert!(
                matches!(e, SecurityError::UsersFileOpenToOthers { mode: m, .. } if m == mode),
                "{e}"
            );
            assert!(e.to_string().contains("chmod 600"), "{e}");
        }
    }
}
