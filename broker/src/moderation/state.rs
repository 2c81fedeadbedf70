//! Moderation state shared by every worker: the ban list and slow-mode intervals, kept in one
//! file of the data directory, and the per-user token buckets.
//!
//! Publishes read the lists on every comment, under a read lock held for one lookup. Moderation
//! actions are rare: they write the whole file anew and then swap in the new lists.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::hash::BuildHasher;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::config::ModerationConfig;
use super::policy::{BlockedWords, TokenBucket};

/// Name of the file in the data directory that keeps the bans and slow-mode intervals.
pub(crate) const MODERATION_FILE: &str = "moderation.json";

/// Name of the file written before it replaces [`MODERATION_FILE`].
const MODERATION_TMP_FILE: &str = "moderation.json.tmp";

/// Version written in the file; a file with another version is rejected at start.
const FILE_VERSION: u32 = 1;

/// Number of locks the token buckets are spread over, so that workers publishing for different
/// users rarely wait for each other.
const BUCKET_SHARDS: usize = 64;

/// Error reading or writing the moderation file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModerationError {
    /// A file system operation failed.
    #[error("failed to {op} {path}: {source}", path = path.display())]
    Io {
        /// The operation, such as "read" or "rename".
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error from the operating system.
        #[source]
        source: io::Error,
    },
    /// The file is not valid JSON of the expected layout.
    #[error(
        "invalid moderation file {path}: {source}; fix or remove it (removing it lifts every \
         ban and slow mode)",
        path = path.display()
    )]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The file was written by a version of chorusd with another layout.
    #[error(
        "moderation file {path} has version {found}, but this chorusd reads version \
         {FILE_VERSION}; use the chorusd that wrote it, or remove the file to lift every ban",
        path = path.display()
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
    },
}

fn io_error<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> ModerationError + 'a {
    move |source| ModerationError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// One ban, as kept in the file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub(crate) struct Ban {
    /// Unix time of the ban, in seconds.
    pub(crate) since_s: u64,
    /// User id of the moderator who banned the user: `admin` for the admin endpoint, empty
    /// without authentication.
    pub(crate) by: String,
    /// Reason given with the ban.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
}

/// The bans and slow-mode intervals, as kept in [`MODERATION_FILE`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Lists {
    version: u32,
    /// Bans by user id.
    pub(crate) bans: BTreeMap<String, Ban>,
    /// Slow-mode intervals in milliseconds by topic name; topics without slow mode are absent.
    pub(crate) slow_mode_ms: BTreeMap<String, u64>,
}

/// Moderation state shared by all workers.
#[derive(Debug)]
pub(crate) struct Moderation {
    pub(crate) config: ModerationConfig,
    pub(crate) blocked: BlockedWords,
    lists: RwLock<Arc<Lists>>,
    /// Serializes writers of the file, so that two actions never lose each other's change.
    write_lock: Mutex<()>,
    path: PathBuf,
    buckets: Vec<Mutex<HashMap<String, TokenBucket>>>,
    /// Keyed hasher for payloads and bucket shards, different in every process.
    hasher: RandomState,
    /// Start of the monotonic clock of the limits.
    epoch: Instant,
}

impl Moderation {
    /// Loads the bans and slow-mode intervals from the data directory; a missing file means
    /// none.
    pub(crate) fn open(
        config: &ModerationConfig,
        data_dir: &Path,
    ) -> Result<Moderation, ModerationError> {
        let path = data_dir.join(MODERATION_FILE);
        let lists = load_lists(&path)?;
        tracing::info!(
            bans = lists.bans.len(),
            slow_mode_topics = lists.slow_mode_ms.len(),
            "moderation lists loaded"
        );
        Ok(Moderation {
            config: config.clone(),
            blocked: BlockedWords::new(&config.blocked_words),
            lists: RwLock::new(Arc::new(lists)),
            write_lock: Mutex::new(()),
            path,
            buckets: (0..BUCKET_SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            epoch: Instant::now(),
        })
    }

    /// Returns microseconds on the monotonic clock of the limits.
    pub(crate) fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Returns whether `user` is banned.
    pub(crate) fn is_banned(&self, user: &str) -> bool {
        self.lists.read().bans.contains_key(user)
    }

    /// Returns the slow-mode interval of `topic` in milliseconds; 0 when it has none.
    pub(crate) fn slow_mode_ms(&self, topic: &str) -> u64 {
        self.lists
            .read()
            .slow_mode_ms
            .get(topic)
            .copied()
            .unwrap_or(0)
    }

    /// Returns the current lists.
    pub(crate) fn lists(&self) -> Arc<Lists> {
        self.lists.read().clone()
    }

    /// Returns the keyed hash of a payload, for duplicate suppression.
    pub(crate) fn payload_hash(&self, payload: &[u8]) -> u64 {
        self.hasher.hash_one(payload)
    }

    /// Takes one token from `user`'s bucket at `now_us`, and returns whether there was one.
    /// Always succeeds when the rate limit is off.
    pub(crate) fn take_token(&self, user: &str, now_us: u64) -> bool {
        let (rate, burst) = (self.config.rate_per_minute, self.config.rate_burst);
        if rate == 0 {
            return true;
        }
        let mut shard = self.bucket_shard(user).lock();
        if let Some(bucket) = shard.get_mut(user) {
            return bucket.try_take(rate, burst, now_us);
        }
        // Full buckets hold no information, so they are dropped whenever the shard has grown.
        if shard.len() >= 1024 && shard.len().is_power_of_two() {
            shard.retain(|_, bucket| !bucket.is_full(rate, burst, now_us));
        }
        let mut bucket = TokenBucket::full(burst, now_us);
        let taken = bucket.try_take(rate, burst, now_us);
        shard.insert(user.to_owned(), bucket);
        taken
    }

    /// Returns the token taken for a comment that was rejected later or not stored.
    pub(crate) fn give_back_token(&self, user: &str) {
        if self.config.rate_per_minute == 0 {
            return;
        }
        if let Some(bucket) = self.bucket_shard(user).lock().get_mut(user) {
            bucket.give_back(self.config.rate_burst);
        }
    }

    fn bucket_shard(&self, user: &str) -> &Mutex<HashMap<String, TokenBucket>> {
        let index = self.hasher.hash_one(user) as usize % self.buckets.len();
        &self.buckets[index]
    }

    /// Bans `user`. Returns `false`, and changes nothing, when the user is already banned.
    pub(crate) fn ban(&self, user: &str, ban: Ban) -> Result<bool, ModerationError> {
        self.update(|lists| {
            if lists.bans.contains_key(user) {
                return false;
            }
            lists.bans.insert(user.to_owned(), ban);
            true
        })
    }

    /// Lifts the ban on `user`. Returns `false` when the user was not banned.
    pub(crate) fn unban(&self, user: &str) -> Result<bool, ModerationError> {
        self.update(|lists| lists.bans.remove(user).is_some())
    }

    /// Sets the slow-mode interval of `topic`; 0 turns it off. Returns whether it changed.
    pub(crate) fn set_slow_mode(
        &self,
        topic: &str,
        interval_ms: u64,
    ) -> Result<bool, ModerationError> {
        self.update(|lists| {
            let previous = if interval_ms == 0 {
                lists.slow_mode_ms.remove(topic)
            } else {
                lists.slow_mode_ms.insert(topic.to_owned(), interval_ms)
            };
            previous.unwrap_or(0) != interval_ms
        })
    }

    /// Applies `change` to a copy of the lists and, when it reports a change, writes the file
    /// and swaps the copy in. On error the lists in force stay as they were.
    fn update(&self, change: impl FnOnce(&mut Lists) -> bool) -> Result<bool, ModerationError> {
        let _writer = self.write_lock.lock();
        let mut next = Lists::clone(&self.lists.read());
        if !change(&mut next) {
            return Ok(false);
        }
        next.version = FILE_VERSION;
        write_lists(&self.path, &next)?;
        *self.lists.write() = Arc::new(next);
        Ok(true)
    }
}

fn load_lists(path: &Path) -> Result<Lists, ModerationError> {
    let text = match fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Lists {
                version: FILE_VERSION,
                ..Lists::default()
            })
        }
        Err(e) => return Err(io_error("read", path)(e)),
    };
    let lists: Lists =
        serde_json::from_slice(&text).map_err(|source| ModerationError::Invalid {
            path: path.to_owned(),
            source,
        })?;
    if lists.version != FILE_VERSION {
        return Err(ModerationError::Version {
            path: path.to_owned(),
            found: lists.version,
        });
    }
    Ok(lists)
}

/// Writes `lists` to a temporary file, flushes it, renames it over `path` and flushes the
/// directory, so that a crash leaves either the old file or the new one.
fn write_lists(path: &Path, lists: &Lists) -> Result<(), ModerationError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(MODERATION_TMP_FILE);
    let mut text = serde_json::to_vec_pretty(lists).map_err(|source| ModerationError::Invalid {
        path: path.to_owned(),
        source,
    })?;
    text.push(b'\n');
    let mut file = File::create(&tmp).map_err(io_error("create", &tmp))?;
    file.write_all(&text).map_err(io_error("write", &tmp))?;
    file.sync_all().map_err(io_error("fsync", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_error("rename", &tmp))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("fsync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(by: &str) -> Ban {
        Ban {
            since_s: 1,
            by: by.into(),
            reason: None,
        }
    }

    #[test]
    fn bans_and_slow_mode_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let moderation = Moderation::open(&ModerationConfig::default(), dir.path()).unwrap();
        assert!(moderation.ban("spammer", ban("mod-1")).unwrap());
        assert!(moderation.set_slow_mode("live", 5000).unwrap());
        drop(moderation);

        let reopened = Moderation::open(&ModerationConfig::default(), dir.path()).unwrap();
        assert!(reopened.is_banned("spammer"));
        assert!(!reopened.is_banned("someone"));
        assert_eq!(reopened.slow_mode_ms("live"), 5000);
        assert_eq!(reopened.slow_mode_ms("other"), 0);
    }

    #[test]
    fn second_ban_reports_no_change() {
        let dir = tempfile::tempdir().unwrap();
        let moderation = Moderation::open(&ModerationConfig::default(), dir.path()).unwrap();
        assert!(moderation.ban("u", ban("a")).unwrap());
        assert!(!moderation.ban("u", ban("b")).unwrap());
        assert_eq!(moderation.lists().bans["u"].by, "a");
    }

    #[test]
    fn unban_lifts_the_ban() {
        let dir = tempfile::tempdir().unwrap();
        let moderation = Moderation::open(&ModerationConfig::default(), dir.path()).unwrap();
        moderation.ban("u", ban("a")).unwrap();
        assert!(moderation.unban("u").unwrap());
        assert!(!moderation.is_banned("u"));
        assert!(!moderation.unban("u").unwrap());
    }

    #[test]
    fn slow_mode_zero_removes_the_topic() {
        let dir = tempfile::tempdir().unwrap();
        let moderation = Moderation::open(&ModerationConfig::default(), dir.path()).unwrap();
        moderation.set_slow_mode("live", 1000).unwrap();
        assert!(moderation.set_slow_mode("live", 0).unwrap());
        assert!(moderation.lists().slow_mode_ms.is_empty());
    }

    #[test]
    fn invalid_file_fails_to_open() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(MODERATION_FILE), "{not json").unwrap();
        let result = Moderation::open(&ModerationConfig::default(), dir.path());
        assert!(matches!(result, Err(ModerationError::Invalid { .. })));
    }

    #[test]
    fn rate_limit_off_always_gives_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let moderation = Moderation::open(&ModerationConfig::default(), dir.path()).unwrap();
        assert!((0..1000).all(|_| moderation.take_token("u", 0)));
    }

    #[test]
    fn rate_limit_counts_per_user() {
        let dir = tempfile::tempdir().unwrap();
        let config = ModerationConfig {
            rate_per_minute: 1,
            rate_burst: 2,
            ..ModerationConfig::default()
        };
        let moderation = Moderation::open(&config, dir.path()).unwrap();
        assert!(moderation.take_token("a", 0));
        assert!(moderation.take_token("a", 0));
        assert!(!moderation.take_token("a", 0));
        assert!(moderation.take_token("b", 0));
        moderation.give_back_token("a");
        assert!(moderation.take_token("a", 0));
    }
}
