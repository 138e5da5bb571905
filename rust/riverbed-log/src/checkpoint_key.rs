//! The key a log signs its checkpoints (and its truncation intents, see
//! [`crate::partition::Partition::truncate_to`]) with: HMAC-SHA256 under 32 random bytes kept in
//! `<log>/~checkpoints/checkpoint.key` (created once, mode 0600). A checkpoint file must end in
//! a valid signature to be used, so a file this log did not write (crafted, copied from another
//! log, or edited with a recomputed CRC) is refused before any of it is restored: its positions
//! and sink end offsets are never applied and no operator state in it (e.g. `stateful_map`
//! state pickled under `state_codec="pickle"`) is ever decoded.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{LogError, Result};

pub type Signer = Hmac<Sha256>;

/// The signature trailer: the 32-byte HMAC of everything before it, then this tag.
pub const TRAILER_TAG: &[u8; 8] = b"RBCKSIG1";
pub const TRAILER_LEN: usize = 32 + TRAILER_TAG.len();
const KEY_FILE: &str = "checkpoint.key";
/// The directory under a log's root where its checkpoints (by default) and its key live.
pub const CHECKPOINTS_DIR: &str = "~checkpoints";

pub struct CheckpointKey {
    key: [u8; 32],
}

fn corrupt(path: &Path, reason: impl Into<String>) -> LogError {
    LogError::Corrupt {
        path: path.to_path_buf(),
        position: 0,
        reason: reason.into(),
    }
}

fn io(what: &str, path: &Path, e: std::io::Error) -> LogError {
    LogError::io(
        path,
        std::io::Error::new(e.kind(), format!("checkpoint key: cannot {what}: {e}")),
    )
}

/// Where the key of the checkpoints in `dir` lives: the `~checkpoints` directory `dir` is in
/// (one key per log), or `dir` itself when it is not under one.
pub fn key_path(dir: &Path) -> PathBuf {
    dir.ancestors()
        .find(|a| a.file_name().is_some_and(|n| n == CHECKPOINTS_DIR))
        .unwrap_or(dir)
        .join(KEY_FILE)
}

impl CheckpointKey {
    /// The key for the checkpoints in `dir`, created (32 random bytes, mode 0600) if there is none.
    pub fn for_dir(dir: &Path) -> Result<CheckpointKey> {
        let path = key_path(dir);
        match fs::read(&path) {
            Ok(bytes) => Self::from_file(&path, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(&path),
            Err(e) => Err(io("read", &path, e)),
        }
    }

    /// The key of the log at `root`, if it has one (never creates it).
    pub fn of_log(root: &Path) -> Result<Option<CheckpointKey>> {
        let path = root.join(CHECKPOINTS_DIR).join(KEY_FILE);
        match fs::read(&path) {
            Ok(bytes) => Self::from_file(&path, &bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", &path, e)),
        }
    }

    /// The key of the log at `root`, created if there is none.
    pub fn for_log(root: &Path) -> Result<CheckpointKey> {
        Self::for_dir(&root.join(CHECKPOINTS_DIR))
    }

    fn from_file(path: &Path, bytes: &[u8]) -> Result<CheckpointKey> {
        let key: [u8; 32] = bytes.try_into().map_err(|_| {
            corrupt(
                path,
                format!(
                    "a checkpoint key is 32 bytes, this file has {}; it was not written by riverbed (remove the log's checkpoints and the key to start over)",
                    bytes.len()
                ),
            )
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(path)
                .map_err(|e| io("stat", path, e))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(corrupt(
                    path,
                    format!("the checkpoint key is open to other users (mode {:o}); it must be 0600 (chmod 600 it)", mode & 0o777),
                ));
            }
        }
        Ok(CheckpointKey { key })
    }

    /// Write a new key to a temporary file, then link it into place: if another process created
    /// one meanwhile, that one wins and is used.
    fn create(path: &Path) -> Result<CheckpointKey> {
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| {
            io(
                "create",
                path,
                std::io::Error::other(format!("no randomness: {e}")),
            )
        })?;
        // Unique per process and call: threads of one process (a staged run's stages) may
        // create the key at the same moment.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!("{KEY_FILE}.{}.{n}.tmp", std::process::id()));
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let written = opts
            .open(&tmp)
            .and_then(|mut f| f.write_all(&key).and_then(|_| f.sync_all()));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io("write", &tmp, e));
        }
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                if let Ok(d) = fs::File::open(dir) {
                    let _ = d.sync_all();
                }
                Ok(CheckpointKey { key })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let bytes = fs::read(path).map_err(|e| io("read", path, e))?;
                Self::from_file(path, &bytes)
            }
            Err(e) => Err(io("create", path, e)),
        }
    }

    pub fn signer(&self) -> Signer {
        // HMAC takes a key of any length; 32 bytes cannot fail.
        <Signer as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length")
    }

    /// `file` without its signature trailer, if the trailer is there and signs the rest under
    /// this key (compared in constant time); otherwise why not.
    pub fn verify<'a>(&self, file: &'a [u8]) -> std::result::Result<&'a [u8], &'static str> {
        if file.len() < TRAILER_LEN || !file.ends_with(TRAILER_TAG) {
            return Err("it is not signed (not written by this log, or by a riverbed before checkpoints were signed)");
        }
        let (body, trailer) = file.split_at(file.len() - TRAILER_LEN);
        let mut mac = self.signer();
        mac.update(body);
        mac.verify_slice(&trailer[..32])
            .map(|_| body)
            .map_err(|_| "its signature does not match this log's checkpoint key (edited, or written by another log)")
    }
}

/// The trailer that signs everything `mac` was fed.
pub fn trailer(mac: Signer) -> Vec<u8> {
    let mut t = mac.finalize().into_bytes().to_vec();
    t.extend_from_slice(TRAILER_TAG);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_created_once_private_and_found_from_any_checkpoint_dir() {
        let root = tempfile::tempdir().unwrap();
        let a = root.path().join("~checkpoints").join("job");
        let b = root.path().join("~checkpoints").join("other").join("p3");
        let ka = CheckpointKey::for_dir(&a).unwrap();
        let kb = CheckpointKey::for_dir(&b).unwrap();
        assert_eq!(ka.key, kb.key);
        let path = root.path().join("~checkpoints").join(KEY_FILE);
        assert_eq!(fs::read(&path).unwrap(), ka.key);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            let e = CheckpointKey::for_dir(&a).err().unwrap().to_string();
            assert!(e.contains("0600"), "{e}");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        }
        // a key of another length is refused, never replaced
        fs::write(&path, b"short").unwrap();
        let e = CheckpointKey::for_dir(&a).err().unwrap().to_string();
        assert!(e.contains("32 bytes"), "{e}");
        assert_eq!(fs::read(&path).unwrap(), b"short");
    }

    #[test]
    fn a_signature_verifies_only_the_bytes_it_signed_under_its_key() {
        let root = tempfile::tempdir().unwrap();
        let k = CheckpointKey::for_dir(root.path()).unwrap();
        let mut mac = k.signer();
        mac.update(b"hello ");
        mac.update(b"world");
        let mut file = b"hello world".to_vec();
        file.extend(trailer(mac));
        assert_eq!(k.verify(&file).unwrap(), b"hello world");
        for i in 0..file.len() {
            let mut f = file.clone();
            f[i] ^= 0x20;
            assert!(k.verify(&f).is_err(), "flipped byte {i} accepted");
        }
        assert!(k.verify(b"hello world").is_err());
        let other = tempfile::tempdir().unwrap();
        let k2 = CheckpointKey::for_dir(other.path()).unwrap();
        assert!(k2.verify(&file).is_err());
    }

    #[test]
    fn threads_creating_the_key_at_once_all_get_the_same_one() {
        let root = tempfile::tempdir().expect("test dir");
        let dir = root.path().join(CHECKPOINTS_DIR).join("job");
        let keys: Vec<[u8; 32]> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| CheckpointKey::for_dir(&dir).map(|k| k.key)))
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("thread").expect("key"))
                .collect()
        });
        assert!(keys.iter().all(|k| *k == keys[0]));
    }
}
