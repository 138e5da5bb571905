//! One writer per log directory: an advisory `flock` on `<root>/.lock` holding the owner's pid
//! and, while the log is served (`riverbed serve`), the address Kafka clients reach it at, so a
//! second process is told where to connect instead.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{IoContext, LogError, Result};

/// Held for as long as the log is open; the OS drops the lock when the process dies (even on kill -9).
#[derive(Debug)]
pub struct DirLock {
    file: File,
    pub path: PathBuf,
    /// The address the log is served at, if it is.
    served: Option<String>,
}

/// The line of the lock file that names the address the log is served at.
const SERVED_PREFIX: &str = "served at ";

impl DirLock {
    pub fn acquire(root: &Path) -> Result<DirLock> {
        let path = root.join(".lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .at(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let mut lines = text.lines();
                let pid = lines.next().unwrap_or("").trim().to_string();
                let served = lines
                    .find_map(|l| l.strip_prefix(SERVED_PREFIX))
                    .map(|a| a.trim().to_string());
                return Err(LogError::Locked {
                    path: root.to_path_buf(),
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid
                    },
                    served,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(LogError::io(&path, e)),
        }
        file.set_len(0).at(&path)?;
        file.seek(SeekFrom::Start(0)).at(&path)?;
        write!(file, "{}", std::process::id()).at(&path)?;
        file.flush().at(&path)?;
        Ok(DirLock {
            file,
            path,
            served: None,
        })
    }

    /// Record (or with `None`, clear) the address the log is served at, for the `LogLocked`
    /// error a second process gets.
    ///
    /// A log is served by one server at a time: naming an address while another is recorded is
    /// an error (two brokers over one log would each run their own consumer groups).
    pub fn advertise(&mut self, served: Option<&str>) -> Result<()> {
        if let (Some(now), Some(new)) = (&self.served, served) {
            return Err(LogError::InvalidArgument(format!(
                "the log is already served at {now}; stop that server before serving it at {new}"
            )));
        }
        let mut text = std::process::id().to_string();
        if let Some(addr) = served {
            text.push_str(&format!("\n{SERVED_PREFIX}{addr}"));
        }
        self.file.set_len(0).at(&self.path)?;
        self.file.seek(SeekFrom::Start(0)).at(&self.path)?;
        self.file.write_all(text.as_bytes()).at(&self.path)?;
        self.file.flush().at(&self.path)?;
        self.served = served.map(str::to_string);
        Ok(())
    }

    /// The address the log is served at, if it is.
    pub fn served(&self) -> Option<&str> {
        self.served.as_deref()
    }
}
