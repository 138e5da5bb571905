//! Gaps: offset ranges of a partition that can't be read, because their bytes are damaged
//! (quarantined in place) or their segment file is missing. They are kept durably in the
//! partition's `quarantine.json`, so damage found lazily in a sealed segment (by a read's CRC
//! check) is still known after a restart, and so offsets in a gap are never given out again.

use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::error::{LogError, Result};

/// The per-partition record of gaps.
pub const QUARANTINE_FILE: &str = "quarantine.json";

/// Offsets `[from, to)` of a partition that can't be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gap {
    pub from: i64,
    pub to: i64,
    /// `quarantined` (damaged bytes kept in place) or `missing_segment`.
    pub kind: String,
    /// The segment file (name inside the partition directory) holding the damage; for a missing
    /// segment, the first segment after the hole.
    pub file: String,
    /// Byte position and length of the damaged region in `file` (0 for a missing segment).
    pub position: u64,
    pub len: u64,
    pub reason: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuarantineRecord {
    version: u32,
    gaps: Vec<Gap>,
    /// CRC-32C of the JSON of `gaps`, so a damaged or hand-edited record is noticed.
    crc: u32,
}

fn crc_of(gaps: &[Gap]) -> u32 {
    crc32c::crc32c(&serde_json::to_vec(gaps).unwrap_or_default())
}

/// Read `quarantine.json`: `Ok(None)` when there is none, `Err(Corrupt)` when it is unreadable,
/// fails its CRC, or holds a gap that is not a non-empty range.
pub fn load(dir: &Path) -> Result<Option<Vec<Gap>>> {
    let path = dir.join(QUARANTINE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io(&path, e)),
    };
    let bad = |reason: String| LogError::Corrupt {
        path: path.clone(),
        position: 0,
        reason,
    };
    let rec: QuarantineRecord =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("bad quarantine record: {e}")))?;
    if rec.version != 1 {
        return Err(bad(format!(
            "unsupported quarantine record version {}",
            rec.version
        )));
    }
    if crc_of(&rec.gaps) != rec.crc {
        return Err(bad("quarantine record fails its CRC".into()));
    }
    if let Some(g) = rec.gaps.iter().find(|g| g.from >= g.to || g.from < 0) {
        return Err(bad(format!("gap {}..{} is not a range", g.from, g.to)));
    }
    Ok(Some(rec.gaps))
}

/// Write `quarantine.json` atomically (removed when there are no gaps left).
pub fn store(dir: &Path, gaps: &[Gap]) -> Result<()> {
    let path = dir.join(QUARANTINE_FILE);
    if gaps.is_empty() {
        return match std::fs::remove_file(&path) {
            Ok(()) => crate::fsutil::sync_dir(dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(LogError::io(&path, e)),
        };
    }
    let rec = QuarantineRecord {
        version: 1,
        gaps: gaps.to_vec(),
        crc: crc_of(gaps),
    };
    let text =
        serde_json::to_vec_pretty(&rec).map_err(|e| LogError::InvalidArgument(e.to_string()))?;
    crate::fsutil::write_atomic(&path, &text)
}

/// Add `new` to `gaps` (kept sorted by `from`); a gap overlapping one already known is merged
/// into it. Returns whether anything changed.
pub fn merge(gaps: &mut Vec<Gap>, new: Gap) -> bool {
    if gaps.iter().any(|g| g.from <= new.from && new.to <= g.to) {
        return false;
    }
    gaps.retain(|g| !(new.from <= g.from && g.to <= new.to));
    let at = gaps.partition_point(|g| g.from < new.from);
    gaps.insert(at, new);
    true
}

/// The gap holding `offset`, if any.
pub fn find(gaps: &[Gap], offset: i64) -> Option<&Gap> {
    gaps.iter().find(|g| g.from <= offset && offset < g.to)
}
