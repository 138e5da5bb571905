//! The log: a directory of topics owned by one process, with a background thread for interval
//! fsyncs, retention and compaction.

use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::config::{FsyncPolicy, LogOptions, TopicConfig, TopicOptions};
use crate::error::{IoContext, LogError, Result};
use crate::group::GroupCoordinator;
use crate::lock::DirLock;
use crate::notify::Notifier;
use crate::segment::Damage;
use crate::topic::{validate_topic_name, Topic};

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
        let mut topics = BTreeMap::new();
        let mut report = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for entry in std::fs::read_dir(&root).at(&root)? {
            let entry = entry.at(&root)?;
            if entry.path().join("topic.json").is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        for name in names {
            let dir = root.join(&name);
            let config = TopicConfig::load(&dir.join("topic.json"))?;
            let (topic, damage) = Topic::open(&name, &dir, config, options.fsync, &notifier)?;
            report.extend(damage);
            topics.insert(name, Arc::new(topic));
        }
        let inner = Arc::new(LogInner {
            root,
            options,
            topics: RwLock::new(topics),
            notifier,
            lock: Mutex::new(Some(lock)),
            report: Mutex::new(report),
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

    /// What recovery found and repaired when the log was opened.
    pub fn open_report(&self) -> Vec<Damage> {
        self.inner.report.lock().clone()
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
        let mut topics = self.inner.topics.write();
        if let Some(t) = topics.get(name) {
            options.check_against(name, t.config())?;
            return Ok(t.clone());
        }
        let config = options.to_config();
        config.validate(name)?;
        let dir = self.inner.root.join(name);
        if dir.exists() {
            // A topic directory without topic.json is what a crash in delete_topic (or in an
            // earlier create) leaves behind: its data belongs to no topic.
            std::fs::remove_dir_all(&dir).at(&dir)?;
        }
        std::fs::create_dir_all(&dir).at(&dir)?;
        let (topic, _) = Topic::open(
            name,
            &dir,
            config.clone(),
            self.inner.options.fsync,
            &self.inner.notifier,
        )?;
        config.store(&dir.join("topic.json"))?;
        crate::fsutil::sync_dir(&self.inner.root)?;
        let topic = Arc::new(topic);
        topics.insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    /// An existing topic, or `TopicNotFound`.
    pub fn get_topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.check_open()?;
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

    pub fn delete_topic(&self, name: &str) -> Result<()> {
        self.check_open()?;
        let topic = self
            .inner
            .topics
            .write()
            .remove(name)
            .ok_or_else(|| LogError::TopicNotFound(name.to_string()))?;
        topic.mark_deleted();
        // Remove topic.json first so a crash mid-delete never leaves a half topic that reopens.
        let cfg = topic.dir.join("topic.json");
        std::fs::remove_file(&cfg).at(&cfg)?;
        std::fs::remove_dir_all(&topic.dir).at(&topic.dir)?;
        crate::fsutil::sync_dir(&self.inner.root)?;
        self.inner.groups.forget_topic(self, name)?;
        Ok(())
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
