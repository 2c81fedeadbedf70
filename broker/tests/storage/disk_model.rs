//! Crash images that model which bytes reached the disk and which were only in the page cache.
//!
//! A test snapshots the topic directory when everything in it is durable (after a flush), runs
//! more writes and snapshots again. It then builds images of what a power loss could leave. In
//! each, a file written since the flush is missing, cut, or a mixture of old and new 512-byte
//! sectors, within the ordering that the fsync policy guarantees. Each image is opened as a data
//! directory, and the test checks that every durable entry is there, that no entry differs from
//! what was written, and that the log takes the next append.

use std::path::Path;

use chorus_broker::storage::{DataDir, FsyncPolicy, LogConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::util::*;

/// Sector size of the modelled disk: writes reach it in whole sectors, in any order.
const SECTOR: usize = 512;

/// Crash images checked per crash point or per scenario.
const IMAGES: usize = 40;

/// Returns what a write of `new` over `old` (`None` for a file that did not exist) can leave
/// after a power loss: the old version, the whole new version, or a torn one. A torn version
/// has a length between the two, and each of its sectors comes from either version, with zeros
/// where that version is shorter. Returns `None` when a new file did not reach the disk.
fn tear(old: Option<&[u8]>, new: &[u8], rng: &mut StdRng) -> Option<Vec<u8>> {
    match rng.gen_range(0..4) {
        0 => return old.map(<[u8]>::to_vec),
        1 => return Some(new.to_vec()),
        _ => {}
    }
    let old = old.unwrap_or(&[]);
    let (low, high) = (old.len().min(new.len()), old.len().max(new.len()));
    let len = match rng.gen_range(0..3) {
        0 => old.len(),
        1 => new.len(),
        _ => rng.gen_range(low..=high),
    };
    let mut out = vec![0u8; len];
    for start in (0..len).step_by(SECTOR) {
        let end = (start + SECTOR).min(len);
        let source = if rng.gen_bool(0.5) { new } else { old };
        for (i, byte) in out[start..end].iter_mut().enumerate() {
            *byte = source.get(start + i).copied().unwrap_or(0);
        }
    }
    Some(out)
}

/// Returns the files that differ between the snapshots, in the order the log writes them: by
/// segment base offset, and for each segment the segment file, then its offset index, then its
/// time index.
fn changed_files_in_write_order(durable: &Snapshot, cached: &Snapshot) -> Vec<String> {
    let mut changed: Vec<String> = cached
        .iter()
        .filter(|(name, bytes)| durable.get(*name) != Some(*bytes))
        .map(|(name, _)| name.clone())
        .collect();
    changed.sort_by_key(|name| {
        let (base, extension) = name.split_once('.').unwrap_or((name, ""));
        let kind = match extension {
            "log" => 0,
            "index" => 1,
            _ => 2,
        };
        (base.to_owned(), kind)
    });
    changed
}

/// Builds a crash image for a policy that flushes each file before writing the next: the files
/// before `point` in write order are complete, the file at `point` is torn, the rest are as the
/// durable snapshot has them.
fn ordered_image(
    durable: &Snapshot,
    cached: &Snapshot,
    order: &[String],
    point: usize,
    rng: &mut StdRng,
) -> Snapshot {
    let mut image = durable.clone();
    for name in &order[..point] {
        image.insert(name.clone(), cached[name].clone());
    }
    if let Some(name) = order.get(point) {
        match tear(durable.get(name).map(Vec::as_slice), &cached[name], rng) {
            Some(bytes) => image.insert(name.clone(), bytes),
            None => image.remove(name),
        };
    }
    image
}

/// Builds a crash image for a policy that flushes nothing. Every changed file is torn on its
/// own, except that new segment files reach the disk in the order they were created, because a
/// journaling file system keeps the creations in one directory in order.
fn unordered_image(durable: &Snapshot, cached: &Snapshot, rng: &mut StdRng) -> Snapshot {
    let mut image = durable.clone();
    let mut created_segment_missing = false;
    for name in changed_files_in_write_order(durable, cached) {
        let old = durable.get(&name).map(Vec::as_slice);
        let is_new_segment = old.is_none() && name.ends_with(".log");
        let torn = if is_new_segment && created_segment_missing {
            None
        } else {
            tear(old, &cached[&name], rng)
        };
        created_segment_missing |= is_new_segment && torn.is_none();
        match torn {
            Some(bytes) => image.insert(name, bytes),
            None => image.remove(&name),
        };
    }
    image
}

/// Opens `image` as the topic `live` of a fresh data directory and checks it against the
/// entries written: at least `durable` of them survive, all read back unchanged, and the log
/// takes the next append. Returns the number of entries recovered.
fn check_image(image: &Snapshot, entries: &[Vec<u8>], durable: u64, config: &LogConfig) -> u64 {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    restore(&data.topic_dir(&topic("live")), image);
    check_recovered(&data, entries, durable, config)
}

fn check_recovered(data: &DataDir, entries: &[Vec<u8>], durable: u64, config: &LogConfig) -> u64 {
    let mut log = data
        .open_topic(&topic("live"), config)
        .unwrap_or_else(|e| panic!("crash image does not open: {e}"));
    let recovered = log.committed_offset();
    assert!(
        recovered >= durable,
        "recovered {recovered} entries, {durable} were durable"
    );
    assert!(recovered <= entries.len() as u64, "recovered {recovered}");
    let (read, error) = read_until_error(&log);
    assert!(error.is_none(), "read failed: {error:?}");
    assert_eq!(read, expected_from(&entries[..recovered as usize], 0));

    let next = entry(recovered, 30);
    log.append(&next).unwrap();
    log.commit().unwrap();
    recovered
}

fn write_batch(log: &mut chorus_broker::storage::TopicLog, entries: &mut Vec<Vec<u8>>, n: u64) {
    let start = entries.len() as u64;
    for offset in start..start + n {
        let e = entry(offset, 30 + (offset as usize * 7) % 50);
        log.append(&e).unwrap();
        entries.push(e);
    }
    log.commit().unwrap();
}

/// Under `fsync = "always"` every commit is durable when it returns, and a roll flushes each
/// file before it writes the next. A power loss during any later commit, at any step of it,
/// keeps every entry of the earlier commits.
#[test]
fn always_policy_keeps_every_committed_entry() {
    let mut rng = StdRng::seed_from_u64(0x5eed_0001);
    let tmp = tempfile::tempdir().unwrap();
    let config = LogConfig {
        fsync: FsyncPolicy::Always,
        ..small_config(true)
    };
    let data = DataDir::open(tmp.path()).unwrap();
    let dir = data.topic_dir(&topic("live"));
    let mut log = data.open_topic(&topic("live"), &config).unwrap();
    let mut entries = Vec::new();

    let mut images = 0;
    for commit in 0..16u64 {
        let durable_state = snapshot(&dir);
        let durable = entries.len() as u64;
        write_batch(&mut log, &mut entries, 1 + commit % 5);
        let cached = snapshot(&dir);

        let order = changed_files_in_write_order(&durable_state, &cached);
        for point in 0..=order.len() {
            for _ in 0..IMAGES / 4 {
                let image = ordered_image(&durable_state, &cached, &order, point, &mut rng);
                let recovered = check_image(&image, &entries, durable, &config);
                if point == order.len() {
                    assert_eq!(recovered, entries.len() as u64);
                }
                images += 1;
            }
        }
    }
    assert!(log.segment_count() > 3, "{}", log.segment_count());
    assert!(images > 400, "{images}");
}

/// Under `fsync = "never"` nothing written after the last `sync` is ordered, and after a reboot
/// the page cache is gone. Every entry before the last `sync` survives, and no torn entry is
/// ever read back.
#[test]
fn never_policy_after_reboot_keeps_synced_entries() {
    let mut rng = StdRng::seed_from_u64(0x5eed_0002);
    for scenario in 0..8u64 {
        let tmp = tempfile::tempdir().unwrap();
        let config = small_config(scenario % 2 == 0);
        let data = DataDir::open(tmp.path()).unwrap();
        let dir = data.topic_dir(&topic("live"));
        let mut log = data.open_topic(&topic("live"), &config).unwrap();
        let mut entries = Vec::new();

        write_batch(&mut log, &mut entries, 5 + scenario * 3);
        log.sync().unwrap();
        let durable_state = snapshot(&dir);
        let durable = entries.len() as u64;
        for _ in 0..3 + scenario {
            write_batch(&mut log, &mut entries, 4);
        }
        let cached = snapshot(&dir);
        drop(log);

        for _ in 0..IMAGES {
            let image = unordered_image(&durable_state, &cached, &mut rng);
            check_rebooted_image(&image, &entries, durable, &config);
        }
    }
}

/// Opens `image` as it would look after a reboot: index files written without a flush carry
/// another boot's id.
fn check_rebooted_image(image: &Snapshot, entries: &[Vec<u8>], durable: u64, config: &LogConfig) {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let dir = data.topic_dir(&topic("live"));
    restore(&dir, image);
    move_indexes_to_earlier_boot(&dir);
    check_recovered(&data, entries, durable, config);
}

/// The images of the `never` test do reach damaged closed segments: a check that the model is
/// not too gentle to matter.
#[test]
fn unordered_images_tear_closed_segments() {
    let mut rng = StdRng::seed_from_u64(0x5eed_0003);
    let tmp = tempfile::tempdir().unwrap();
    let config = small_config(true);
    let data = DataDir::open(tmp.path()).unwrap();
    let dir = data.topic_dir(&topic("live"));
    let mut log = data.open_topic(&topic("live"), &config).unwrap();
    let mut entries = Vec::new();
    log.sync().unwrap();
    let durable_state = snapshot(&dir);
    for _ in 0..6 {
        write_batch(&mut log, &mut entries, 4);
    }
    let cached = snapshot(&dir);
    drop(log);

    let mut cut_short = 0;
    for _ in 0..IMAGES {
        let image = unordered_image(&durable_state, &cached, &mut rng);
        if recovered_entries(&image, &config) < entries.len() as u64 {
            cut_short += 1;
        }
    }
    assert!(
        cut_short > IMAGES / 4,
        "{cut_short} of {IMAGES} images lost entries"
    );
}

fn recovered_entries(image: &Snapshot, config: &LogConfig) -> u64 {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let dir: &Path = &data.topic_dir(&topic("live"));
    restore(dir, image);
    move_indexes_to_earlier_boot(dir);
    let log = data.open_topic(&topic("live"), config).unwrap();
    log.committed_offset()
}
