//! The log: a directory of topics owned by one process, with a background thread for interval
//! fsyncs, retention and compaction.

use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::config::{FsyncPolicy, LogOptions, TopicConfig, TopicOptions};
use crate::error::{IoContext, LogError, Result};
use crate::group::{GroupCoordinator, OffsetsHome};
use crate::lock::DirLock;
use crate::notify::Notifier;
use crate::segment::Damage;
use crate::topic::{is_internal_topic, validate_topic_name, Topic};

/// Where a topic is built before it is renamed into place (so a crash never leaves half a topic),
/// and where a deleted topic is moved before it is removed (so a crash never leaves a topic
/// without its `topic.json`). Names with `~` can't be topic names; both are emptied on open.
const STAGING_DIR: &str = "~staging";
const TRASH_DIR: &str = "~trash";

/// A directory of the log root that could not be opened as a topic, and why.
#[derive(Debug, Clone)]
struct Unavailable {
    path: PathBuf,
    reason: String,
    /// A topic whose metadata is damaged (`CorruptLog`), or a directory that is no topic at all.
    corrupt: bool,
}

impl Unavailable {
    fn error(&self, name: &str) -> LogError {
        if self.corrupt {
            LogError::Corrupt {
                path: self.path.clone(),
                position: 0,
                reason: format!("topic '{name}' is unavailable: {}", self.reason),
            }
        } else {
            LogError::InvalidArgument(format!(
                "{} is not a riverbed topic ({}); move it out of the log directory or use \
                 another topic name",
                self.path.display(),
                self.reason
            ))
        }
    }
}

/// Remove what riverbed left in its own staging and trash directories.
fn empty_own_dir(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).at(&path)?;
        } else {
            std::fs::remove_file(&path).at(&path)?;
        }
    }
    Ok(())
}

/// A partition directory name: a canonical non-negative integer.
fn partition_number(name: &str) -> Option<u32> {
    let n: u32 = name.parse().ok()?;
    (n.to_string() == name).then_some(n)
}

/// Files riverbed writes in a partition directory.
fn is_partition_file(name: &str) -> bool {
    let stem_ok = |stem: &str| stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit());
    [".log", ".index", ".timeindex", ".log.cleaned", ".idxtmp"]
        .iter()
        .any(|ext| name.strip_suffix(ext).is_some_and(stem_ok))
        || matches!(
            name,
            "truncation.json" | "truncation.tmp" | "quarantine.json" | "quarantine.tmp"
        )
}

/// The partition directories (numbers, sorted) of a topic directory, and the first thing in it
/// riverbed does not write, if any.
fn partition_dirs(dir: &Path) -> Result<(Vec<u32>, usize, Option<String>)> {
    let mut parts = Vec::new();
    let mut segments = 0usize;
    let mut foreign = None;
    for entry in std::fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "topic.json" || name == "topic.tmp" {
            continue;
        }
        let Some(p) = partition_number(&name).filter(|_| entry.path().is_dir()) else {
            foreign.get_or_insert(format!("it holds {name:?}, which riverbed does not write"));
            continue;
        };
        for f in std::fs::read_dir(entry.path()).at(&entry.path())? {
            let f = f.at(&entry.path())?;
            let fname = f.file_name().to_string_lossy().into_owned();
            if is_partition_file(&fname) {
                segments += usize::from(fname.ends_with(".log"));
            } else {
                foreign.get_or_insert(format!("{name}/{fname} is not a file riverbed writes"));
            }
        }
        parts.push(p);
    }
    parts.sort_unstable();
    Ok((parts, segments, foreign))
}

/// `partitions` are exactly `0..n`.
fn contiguous_partitions(parts: &[u32]) -> std::result::Result<u32, String> {
    if parts.iter().enumerate().any(|(i, &p)| p as usize != i) {
        return Err(format!(
            "partition directories {parts:?} are not 0..{}",
            parts.len()
        ));
    }
    Ok(parts.len() as u32)
}

/// Whether partition directories `from..to` of a topic hold no records (only empty segments):
/// what an interrupted [`Log::add_partitions`] leaves.
fn added_partitions_empty(dir: &Path, from: u32, to: u32) -> bool {
    (from..to).all(|p| {
        let pdir = dir.join(p.to_string());
        std::fs::read_dir(&pdir).is_ok_and(|entries| {
            entries.into_iter().all(|e| {
                e.is_ok_and(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let empty = e.metadata().is_ok_and(|m| m.is_file() && m.len() == 0);
                    (name.ends_with(".log")
                        || name.ends_with(".index")
                        || name.ends_with(".timeindex"))
                        && empty
                })
            })
        })
    })
}

#[derive(Debug, Clone)]
pub struct Log {
    inner: Arc<LogInner>,
}

#[derive(Debug)]
pub(crate) struct LogInner {
    pub root: PathBuf,
    pub options: LogOptions,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    pub notifier: Arc<Notifier>,
    lock: Mutex<Option<DirLock>>,
    report: Mutex<Vec<Damage>>,
    /// Directories of the root that are not usable topics, by name.
    unavailable: RwLock<BTreeMap<String, Unavailable>>,
    pub groups: GroupCoordinator,
    /// Held by whoever runs retention/compaction, so the background thread and an explicit
    /// `cleanup()` never work on the same partition at once.
    pub cleaner: Mutex<()>,
    background: Mutex<Option<std::thread::JoinHandle<()>>>,
    stop: Arc<(Mutex<bool>, Condvar)>,
}

impl Log {
    /// Open (creating if needed) the log at `root`. Fails with `Locked` if another process has it.
    pub fn open(root: impl AsRef<Path>, options: LogOptions) -> Result<Log> {
        let root = root.as_ref().to_path_buf();
        std::fs::create_dir_all(&root).at(&root)?;
        let lock = DirLock::acquire(&root)?;
        let notifier = Arc::new(Notifier::default());
        empty_own_dir(&root.join(STAGING_DIR))?;
        empty_own_dir(&root.join(TRASH_DIR))?;
        let mut topics = BTreeMap::new();
        let mut report = Vec::new();
        let mut unavailable = BTreeMap::new();
        let mut names: Vec<String> = Vec::new();
        for entry in std::fs::read_dir(&root).at(&root)? {
            let entry = entry.at(&root)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Files (the lock, keys) and riverbed's own `~` directories are not topics.
            if entry.path().is_dir() && validate_topic_name(&name).is_ok() {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            let dir = root.join(&name);
            match Self::open_topic_dir(&name, &dir, &options, &notifier)? {
                Ok((topic, damage)) => {
                    report.extend(damage);
                    topics.insert(name, Arc::new(topic));
                }
                Err(u) => {
                    let mut d = Damage::new(
                        &u.path,
                        if u.corrupt {
                            "bad_metadata"
                        } else {
                            "not_a_topic"
                        },
                        u.reason.clone(),
                    );
                    d.topic = Some(name.clone());
                    report.push(d);
                    unavailable.insert(name, u);
                }
            }
        }
        let inner = Arc::new(LogInner {
            root,
            options,
            topics: RwLock::new(topics),
            notifier,
            lock: Mutex::new(Some(lock)),
            report: Mutex::new(report),
            unavailable: RwLock::new(unavailable),
            groups: GroupCoordinator::default(),
            cleaner: Mutex::new(()),
            background: Mutex::new(None),
            stop: Arc::new((Mutex::new(false), Condvar::new())),
        });
        let log = Log { inner };
        log.inner.groups.load(&log)?;
        log.start_background();
        Ok(log)
    }

    /// Open one directory of the root as a topic: validate `topic.json` against the partition
    /// directories, or rebuild a lost one from them; anything else makes just this topic
    /// unavailable.
    fn open_topic_dir(
        name: &str,
        dir: &Path,
        options: &LogOptions,
        notifier: &Arc<Notifier>,
    ) -> Result<std::result::Result<(Topic, Vec<Damage>), Unavailable>> {
        match Self::try_open_topic_dir(name, dir, options, notifier) {
            // An I/O failure (too many open files, permissions) is not damage: fail the open.
            Err(Err(e)) => Err(e),
            Err(Ok(u)) => Ok(Err(u)),
            Ok(t) => Ok(Ok(t)),
        }
    }

    #[allow(clippy::type_complexity)]
    fn try_open_topic_dir(
        name: &str,
        dir: &Path,
        options: &LogOptions,
        notifier: &Arc<Notifier>,
    ) -> std::result::Result<(Topic, Vec<Damage>), std::result::Result<Unavailable, LogError>> {
        let cfg_path = dir.join("topic.json");
        let bad = |path: &Path, reason: String| {
            Ok(Unavailable {
                path: path.to_path_buf(),
                reason,
                corrupt: true,
            })
        };
        let on_disk = partition_dirs(dir).map_err(Err)?;
        let mut damages = Vec::new();
        let config = if cfg_path.exists() {
            let config = TopicConfig::load(&cfg_path).map_err(|e| match e {
                LogError::Corrupt { .. } => bad(&cfg_path, e.to_string()),
                e => Err(e),
            })?;
            config
                .validate(name)
                .map_err(|e| bad(&cfg_path, format!("{e}")))?;
            // Files riverbed does not write are left alone (and don't matter); the partition
            // directories must be exactly the ones topic.json names.
            match contiguous_partitions(&on_disk.0) {
                Ok(n) if n == config.partitions => {}
                Ok(n)
                    if n > config.partitions
                        && added_partitions_empty(dir, config.partitions, n) =>
                {
                    // An interrupted `add_partitions`: the new directories were made, topic.json
                    // (written last) was not. They hold nothing: remove them.
                    for p in config.partitions..n {
                        let pdir = dir.join(p.to_string());
                        std::fs::remove_dir_all(&pdir).at(&pdir).map_err(Err)?;
                    }
                    crate::fsutil::sync_dir(dir).map_err(Err)?;
                    let mut d = Damage::new(
                        dir,
                        "partitions_add_rolled_back",
                        format!(
                            "an interrupted partition increase left empty partitions {}..{n}; \
                             removed (topic.json says {})",
                            config.partitions, config.partitions
                        ),
                    );
                    d.topic = Some(name.to_string());
                    damages.push(d);
                }
                Ok(n) => {
                    return Err(bad(
                        &cfg_path,
                        format!(
                            "topic.json says {} partitions but the directory holds {n}",
                            config.partitions
                        ),
                    ))
                }
                Err(why) => return Err(bad(&cfg_path, why)),
            }
            config
        } else {
            // Rebuilt only from what riverbed writes: anything else and it is not a topic.
            let (parts, segments, foreign) = on_disk;
            let why = match (foreign, segments) {
                (Some(f), _) => Some(f),
                (None, 0) => {
                    Some("no topic.json and no partition directories with segments".into())
                }
                (None, _) => contiguous_partitions(&parts).err(),
            };
            if let Some(why) = why {
                return Err(Ok(Unavailable {
                    path: dir.to_path_buf(),
                    reason: why,
                    corrupt: false,
                }));
            }
            let n = parts.len() as u32;
            let mut config = TopicConfig {
                partitions: n,
                ..TopicConfig::default()
            };
            if name == crate::group::OFFSETS_TOPIC {
                config.cleanup = crate::config::Cleanup::Compact;
            }
            config
                .store(&cfg_path)
                .map_err(|e| bad(&cfg_path, e.to_string()))?;
            let mut d = Damage::new(
                &cfg_path,
                "topic_rebuilt",
                format!(
                    "topic.json was missing: rebuilt from the {n} partition directories with \
                     default settings (set retention, segment size and cleanup again if they \
                     were not the defaults)"
                ),
            );
            d.topic = Some(name.to_string());
            damages.push(d);
            config
        };
        let (topic, damage) =
            Topic::open(name, dir, config, options.fsync, notifier).map_err(|e| match e {
                LogError::Io { .. } => Err(e),
                e => bad(dir, e.to_string()),
            })?;
        damages.extend(damage);
        Ok((topic, damages))
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    pub fn options(&self) -> &LogOptions {
        &self.inner.options
    }

    pub(crate) fn inner(&self) -> &LogInner {
        &self.inner
    }

    pub fn notifier(&self) -> &Arc<Notifier> {
        &self.inner.notifier
    }

    /// What recovery found and repaired when the log was opened, and damage reads found since.
    pub fn open_report(&self) -> Vec<Damage> {
        let mut out = self.inner.report.lock().clone();
        for t in self.all_topics() {
            for p in t.partitions() {
                out.extend(p.found_damage());
            }
        }
        out
    }

    /// Verify everything: every batch of every segment (CRC), every index file against the
    /// segment, every metadata file (at open). Returns every damage known (an empty list means
    /// the log is intact); damage found here is quarantined like damage a read finds.
    pub fn check(&self, topic: Option<&str>) -> Result<Vec<Damage>> {
        self.check_open()?;
        let wanted = |name: &Option<String>| topic.is_none() || name.as_deref() == topic;
        if let Some(t) = topic {
            if !self.inner.topics.read().contains_key(t)
                && !self.inner.unavailable.read().contains_key(t)
            {
                return Err(LogError::TopicNotFound(t.to_string()));
            }
        }
        let mut out: Vec<Damage> = self
            .inner
            .report
            .lock()
            .iter()
            .filter(|d| wanted(&d.topic))
            .cloned()
            .collect();
        for t in self.all_topics() {
            if topic.is_some_and(|n| n != &*t.name) {
                continue;
            }
            for p in t.partitions() {
                p.verify()?;
                out.extend(p.found_damage());
                for g in p.gaps() {
                    let covered = out.iter().any(|d| {
                        d.topic.as_deref() == Some(&*t.name)
                            && d.partition == Some(p.id)
                            && d.offsets.is_some_and(|(a, b)| a <= g.from && g.to <= b)
                    });
                    if !covered {
                        let mut d = Damage::new(p.dir.join(&g.file), &g.kind, g.reason.clone());
                        d.topic = Some(t.name.to_string());
                        d.partition = Some(p.id);
                        d.position = g.position;
                        d.offsets = Some((g.from, g.to));
                        out.push(d);
                    }
                }
            }
        }
        Ok(out)
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.notifier.is_closed() {
            Err(LogError::Closed)
        } else {
            Ok(())
        }
    }

    /// Open a topic, creating it with `options` if missing. Options that contradict the stored
    /// config are an error.
    pub fn topic(&self, name: &str, options: &TopicOptions) -> Result<Arc<Topic>> {
        self.check_open()?;
        validate_topic_name(name)?;
        if let Some(t) = self.inner.topics.read().get(name) {
            options.check_against(name, t.config())?;
            return Ok(t.clone());
        }
        if let Some(u) = self.inner.unavailable.read().get(name) {
            return Err(u.error(name));
        }
        let config = options.to_config();
        config.validate(name)?;
        // Built (and synced: one fsync per partition) before the topics lock is taken, so a
        // large topic being created does not stall the other topics' readers and writers.
        let staging = self.stage_topic_dir(&config)?;
        let discard = || {
            // Ours, never renamed into place: remove what was built.
            let _ = std::fs::remove_dir_all(&staging);
        };
        let mut topics = self.inner.topics.write();
        if let Some(t) = topics.get(name) {
            // Created meanwhile by another caller.
            discard();
            options.check_against(name, t.config())?;
            return Ok(t.clone());
        }
        if let Some(u) = self.inner.unavailable.read().get(name) {
            discard();
            return Err(u.error(name));
        }
        let dir = self.inner.root.join(name);
        if dir.exists() {
            discard();
            // Appeared after open: riverbed did not put it there, so it is left alone.
            return Err(LogError::InvalidArgument(format!(
                "{} already exists and is not a topic of this log; move it away or use another \
                 topic name",
                dir.display()
            )));
        }
        std::fs::rename(&staging, &dir)
            .at(&dir)
            .inspect_err(|_| discard())?;
        crate::fsutil::sync_dir(&self.inner.root)?;
        let (topic, _) = Topic::open(
            name,
            &dir,
            config,
            self.inner.options.fsync,
            &self.inner.notifier,
        )?;
        let topic = Arc::new(topic);
        topics.insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    /// Build a topic's directory (topic.json, partition directories, first segments) in the
    /// staging directory, synced; the caller renames it into place, so a crash leaves either no
    /// topic or a whole one (staging directories are removed at open).
    fn stage_topic_dir(&self, config: &TopicConfig) -> Result<PathBuf> {
        let staging_root = self.inner.root.join(STAGING_DIR);
        let staging = staging_root.join(crate::fsutil::unique_name());
        let build = || -> Result<()> {
            std::fs::create_dir_all(&staging).at(&staging)?;
            for p in 0..config.partitions {
                let pdir = staging.join(p.to_string());
                std::fs::create_dir(&pdir).at(&pdir)?;
                let seg = crate::segment::segment_paths(&pdir, 0).0;
                std::fs::File::create(&seg).at(&seg)?;
                crate::fsutil::sync_dir(&pdir)?;
            }
            config.store(&staging.join("topic.json"))?;
            crate::fsutil::sync_dir(&staging_root)
        };
        match build() {
            Ok(()) => Ok(staging),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                Err(e)
            }
        }
    }

    /// An existing topic, or `TopicNotFound` (`Corrupt` for a topic whose metadata is damaged).
    pub fn get_topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.check_open()?;
        if let Some(u) = self.inner.unavailable.read().get(name) {
            return Err(u.error(name));
        }
        self.inner
            .topics
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::TopicNotFound(name.to_string()))
    }

    /// Names of the user topics (internal ones start with `__`).
    pub fn topic_names(&self) -> Vec<String> {
        self.inner
            .topics
            .read()
            .keys()
            .filter(|n| !n.starts_with("__"))
            .cloned()
            .collect()
    }

    /// Delete a topic and its data. Internal topics can't be deleted. Atomic across crashes: the
    /// directory is renamed into the trash first (a crash leaves the whole topic or none of it).
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        self.check_open()?;
        if is_internal_topic(name) {
            return Err(LogError::InternalTopic(name.to_string()));
        }
        let topic = self
            .inner
            .topics
            .write()
            .remove(name)
            .ok_or_else(|| LogError::TopicNotFound(name.to_string()))?;
        topic.mark_deleted();
        let trash_root = self.inner.root.join(TRASH_DIR);
        std::fs::create_dir_all(&trash_root).at(&trash_root)?;
        let trash = trash_root.join(crate::fsutil::unique_name());
        std::fs::rename(&topic.dir, &trash).at(&topic.dir)?;
        crate::fsutil::sync_dir(&self.inner.root)?;
        std::fs::remove_dir_all(&trash).at(&trash)?;
        self.inner.groups.forget_topic(self, name)?;
        Ok(())
    }

    /// Grow a topic to `partitions` partitions (Kafka's CreatePartitions; partitions are never
    /// removed). Durable and crash-safe: the new partition directories (each with an empty first
    /// segment) are made and synced first, `topic.json` is rewritten last; a crash in between
    /// leaves empty directories that the next open removes. Handles to the topic taken before
    /// keep seeing the old partitions; `get_topic` returns the grown topic.
    pub fn add_partitions(&self, name: &str, partitions: u32) -> Result<Arc<Topic>> {
        self.check_open()?;
        if is_internal_topic(name) {
            return Err(LogError::InternalTopic(name.to_string()));
        }
        let mut topics = self.inner.topics.write();
        let old = topics
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::TopicNotFound(name.to_string()))?;
        let have = old.num_partitions();
        if partitions <= have {
            return Err(LogError::InvalidArgument(format!(
                "topic '{name}' has {have} partitions: a topic can only grow, not to {partitions}"
            )));
        }
        let mut config = old.config().clone();
        config.partitions = partitions;
        config.validate(name)?;
        for p in have..partitions {
            let pdir = old.dir.join(p.to_string());
            std::fs::create_dir_all(&pdir).at(&pdir)?;
            let seg = crate::segment::segment_paths(&pdir, 0).0;
            std::fs::File::create(&seg).at(&seg)?;
            crate::fsutil::sync_dir(&pdir)?;
        }
        crate::fsutil::sync_dir(&old.dir)?;
        config.store(&old.dir.join("topic.json"))?;
        let grown = Arc::new(old.grown(config, self.inner.options.fsync, &self.inner.notifier)?);
        topics.insert(name.to_string(), grown.clone());
        Ok(grown)
    }

    /// Change a topic's settings (Kafka's AlterConfigs / IncrementalAlterConfigs): `options`
    /// over the stored config (the partition count is not a setting: see `add_partitions`).
    /// `topic.json` is rewritten atomically, then every partition uses the new settings
    /// (retention and compaction at the next cleanup, segment settings at the next roll).
    /// A compacted topic can't go back to `delete`: its segments have offset holes that only
    /// a compacted topic may have. With `validate_only`, everything is checked and nothing
    /// changed.
    pub fn alter_topic_config(
        &self,
        name: &str,
        options: &TopicOptions,
        validate_only: bool,
    ) -> Result<Arc<Topic>> {
        self.check_open()?;
        if is_internal_topic(name) {
            return Err(LogError::InternalTopic(name.to_string()));
        }
        let mut topics = self.inner.topics.write();
        let old = topics
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::TopicNotFound(name.to_string()))?;
        let stored = old.config();
        if options.partitions.is_some_and(|p| p != stored.partitions) {
            return Err(LogError::InvalidArgument(
                "the partition count is not a topic setting: add partitions instead".into(),
            ));
        }
        let config = TopicConfig {
            partitions: stored.partitions,
            retention_ms: options.retention_ms.unwrap_or(stored.retention_ms),
            retention_bytes: options.retention_bytes.unwrap_or(stored.retention_bytes),
            segment_bytes: options.segment_bytes.unwrap_or(stored.segment_bytes),
            segment_ms: options.segment_ms.unwrap_or(stored.segment_ms),
            cleanup: options.cleanup.unwrap_or(stored.cleanup),
            delete_retention_ms: options
                .delete_retention_ms
                .unwrap_or(stored.delete_retention_ms),
        };
        if stored.cleanup == crate::config::Cleanup::Compact
            && config.cleanup == crate::config::Cleanup::Delete
        {
            return Err(LogError::InvalidArgument(format!(
                "topic '{name}' is compacted: its segments may have offset holes, so it can't \
                 become cleanup=delete (copy it to a new topic instead)"
            )));
        }
        config.validate(name)?;
        if validate_only {
            return Ok(old);
        }
        config.store(&old.dir.join("topic.json"))?;
        let changed = Arc::new(old.reconfigured(config));
        topics.insert(name.to_string(), changed.clone());
        Ok(changed)
    }

    pub(crate) fn all_topics(&self) -> Vec<Arc<Topic>> {
        self.inner.topics.read().values().cloned().collect()
    }

    /// Apply retention and compaction to every topic now.
    pub fn cleanup(&self) -> Result<crate::cleaner::CleanupStats> {
        self.check_open()?;
        let _g = self.inner.cleaner.lock();
        let mut stats = crate::cleaner::CleanupStats::default();
        for t in self.all_topics() {
            stats += crate::cleaner::clean_topic(&t, self.inner.options.fsync)?;
        }
        Ok(stats)
    }

    /// fsync every partition with unsynced writes.
    pub fn flush(&self) -> Result<()> {
        for t in self.all_topics() {
            t.sync()?;
        }
        Ok(())
    }

    fn start_background(&self) {
        let interval = match self.inner.options.fsync {
            FsyncPolicy::Interval(d) => Some(d),
            _ => None,
        };
        let cleanup = self.inner.options.cleanup_interval;
        let tick = match (interval, cleanup) {
            (None, None) => return,
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
        };
        // The thread holds the log only while working, so dropping the last handle closes it.
        let weak = Arc::downgrade(&self.inner);
        let stop = self.inner.stop.clone();
        let handle = std::thread::Builder::new()
            .name("riverbed-log-background".into())
            .spawn(move || {
                let mut next_cleanup = cleanup.map(|c| Instant::now() + c);
                loop {
                    {
                        let mut stopped = stop.0.lock();
                        if !*stopped {
                            stop.1.wait_for(&mut stopped, tick);
                        }
                        if *stopped {
                            return;
                        }
                    }
                    let Some(inner) = weak.upgrade() else { return };
                    let log = Log { inner };
                    if interval.is_some() {
                        let _ = log.flush();
                    }
                    if let (Some(at), Some(every)) = (next_cleanup, cleanup) {
                        if Instant::now() >= at {
                            let _ = log.cleanup();
                            next_cleanup = Some(Instant::now() + every);
                        }
                    }
                }
            })
            .ok();
        *self.inner.background.lock() = handle;
    }

    /// Record the address the log is served at (`riverbed serve`), or clear it with `None`: a
    /// second process that tries to open the directory is told to connect there instead.
    pub fn advertise_served_at(&self, addr: Option<&str>) -> Result<()> {
        match self.inner.lock.lock().as_mut() {
            Some(lock) => lock.advertise(addr),
            None => Err(LogError::Closed),
        }
    }

    /// The address the log is served at (`riverbed serve`), if it is.
    pub fn served_at(&self) -> Option<String> {
        self.inner
            .lock
            .lock()
            .as_ref()
            .and_then(|l| l.served().map(str::to_string))
    }

    /// Flush, write indexes, stop background work and release the directory lock. Idempotent.
    pub fn close(&self) -> Result<()> {
        if self.inner.notifier.close() {
            return Ok(());
        }
        {
            *self.inner.stop.0.lock() = true;
            self.inner.stop.1.notify_all();
        }
        if let Some(h) = self.inner.background.lock().take() {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
        let _g = self.inner.cleaner.lock();
        let mut first_err = None;
        for t in self.all_topics() {
            if let Err(e) = t.close() {
                first_err.get_or_insert(e);
            }
        }
        self.inner.lock.lock().take();
        first_err.map_or(Ok(()), Err)
    }

    pub fn is_closed(&self) -> bool {
        self.inner.notifier.is_closed()
    }
}

impl Drop for LogInner {
    fn drop(&mut self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        if !self.notifier.close() {
            for t in self.topics.read().values() {
                let _ = t.close();
            }
        }
    }
}

impl Log {
    /// The log's consumer groups: in-process members and the durable committed offsets that the
    /// broker's group coordinator shares with them.
    pub fn groups(&self) -> &GroupCoordinator {
        &self.inner().groups
    }
}

impl OffsetsHome for Log {
    fn offsets_topic_named(&self, name: &str, options: &TopicOptions) -> Result<Arc<Topic>> {
        self.topic(name, options)
    }
    fn is_closed(&self) -> bool {
        Log::is_closed(self)
    }
}
