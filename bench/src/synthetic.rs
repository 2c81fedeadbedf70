//! Synthetic chat: a steady comment rate with periodic spikes.
//!
//! Arrivals form a Poisson process whose rate is `rate` outside spikes and
//! `rate * spike_factor` inside them. Spikes start every `spike_every` seconds (the first one
//! after `spike_every`, so a run opens at the base rate) and last `spike_secs`. The process is
//! drawn by thinning: candidates arrive at the highest rate and each is kept with probability
//! `rate_at(t) / highest rate`, which gives the exact piecewise-constant rate.

use std::time::Duration;

use anyhow::ensure;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::workload::Comment;

/// Max number of comments a synthetic run may expect, so a typo in `--rate` or
/// `--duration` fails fast instead of exhausting memory.
const MAX_EXPECTED_COMMENTS: f64 = 50_000_000.0;

/// Words that comments are made of: English chat words, emoji, CJK words and emote shortcodes,
/// so that byte sizes and character mixes resemble a live chat.
const WORDS: &[&str] = &[
    "lol",
    "gg",
    "wow",
    "nice",
    "goal",
    "yes",
    "no",
    "what",
    "go",
    "team",
    "let's",
    "hype",
    "first",
    "love",
    "this",
    "is",
    "so",
    "good",
    "omg",
    "haha",
    "pog",
    "clip",
    "it",
    "again",
    "replay",
    "ref",
    "come",
    "on",
    "best",
    "ever",
    "hello",
    "from",
    "night",
    "again!",
    "who",
    "😂",
    "🔥",
    "👍",
    "🎉",
    "❤️",
    "😭",
    "👏",
    "🙏",
    "😮",
    "🤣",
    "💯",
    "🥳",
    "加油",
    "好",
    "厲害",
    "哈哈哈",
    "太好了",
    "你好",
    "謝謝",
    "真的",
    "香港",
    "速度",
    "すごい",
    "かわいい",
    "ありがとう",
    "최고",
    "대박",
    ":face-blue-smiling:",
    ":hand-pink-waving:",
    ":yt:",
    ":text-green-game-over:",
];

/// Share of comments that are long (a paragraph rather than a reaction).
const LONG_SHARE: f64 = 0.02;

/// Parameters of a synthetic run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SyntheticConfig {
    /// Length of the generated chat in seconds.
    pub(crate) duration_secs: f64,
    /// Base rate in comments per second.
    pub(crate) rate: f64,
    /// Seconds between spike starts; 0 for no spikes.
    pub(crate) spike_every_secs: f64,
    /// Rate multiplier during a spike.
    pub(crate) spike_factor: f64,
    /// Length of each spike in seconds.
    pub(crate) spike_secs: f64,
    /// Seed of the random generator; the same seed gives the same comments.
    pub(crate) seed: u64,
}

impl SyntheticConfig {
    /// Checks that every parameter is finite and in range.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        let positive = |value: f64| value.is_finite() && value > 0.0;
        let non_negative = |value: f64| value.is_finite() && value >= 0.0;
        ensure!(
            positive(self.duration_secs),
            "--duration must be > 0 seconds"
        );
        ensure!(
            positive(self.rate),
            "--rate must be > 0 comments per second"
        );
        ensure!(
            non_negative(self.spike_every_secs),
            "--spike-every must be >= 0 seconds"
        );
        ensure!(positive(self.spike_factor), "--spike-factor must be > 0");
        ensure!(
            non_negative(self.spike_secs),
            "--spike-secs must be >= 0 seconds"
        );
        let expected = self.duration_secs * self.rate * self.spike_factor.max(1.0);
        ensure!(
            expected <= MAX_EXPECTED_COMMENTS,
            "--duration {} at up to {} comments per second may give {expected:.0} comments; \
             the maximum is {MAX_EXPECTED_COMMENTS:.0}",
            self.duration_secs,
            self.rate * self.spike_factor.max(1.0),
        );
        Ok(())
    }

    /// Returns whether second `t` of the run falls inside a spike.
    pub(crate) fn in_spike(&self, t: f64) -> bool {
        if self.spike_every_secs <= 0.0 || t < self.spike_every_secs {
            return false;
        }
        t % self.spike_every_secs < self.spike_secs
    }

    /// Returns the comment rate at second `t`, in comments per second.
    pub(crate) fn rate_at(&self, t: f64) -> f64 {
        if self.in_spike(t) {
            self.rate * self.spike_factor
        } else {
            self.rate
        }
    }

    fn max_rate(&self) -> f64 {
        self.rate * self.spike_factor.max(1.0)
    }
}

/// Generates the comments of a synthetic run, at most `limit` of them.
///
/// The caller validates `config` first.
pub(crate) fn generate(config: &SyntheticConfig, limit: Option<usize>) -> Vec<Comment> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let max_rate = config.max_rate();
    let authors = author_pool_size(config);
    let limit = limit.unwrap_or(usize::MAX);

    let mut comments = Vec::new();
    let mut t = 0.0f64;
    while comments.len() < limit {
        // Exponential gap at the highest rate; `1 - u` is in (0, 1], so the log is finite.
        let u: f64 = rng.gen();
        t += -(1.0 - u).ln() / max_rate;
        if t >= config.duration_secs {
            break;
        }
        let keep: f64 = rng.gen();
        if keep >= config.rate_at(t) / max_rate {
            continue;
        }
        let author = rng.gen_range(0..authors);
        comments.push(Comment {
            at: Duration::from_secs_f64(t),
            author: author_id(config.seed, author),
            text: random_text(&mut rng),
        });
    }
    comments
}

/// Sizes the author pool at about two comments per author, as in recorded live chats.
fn author_pool_size(config: &SyntheticConfig) -> u64 {
    let expected = config.duration_secs * config.rate;
    ((expected / 2.0) as u64).max(1)
}

/// Returns a stable pseudonymous author id such as `u_3f9a0c1b2d4e`.
fn author_id(seed: u64, author: u64) -> String {
    format!("u_{:012x}", splitmix64(seed ^ author) & 0xffff_ffff_ffff)
}

/// SplitMix64 finalizer: spreads consecutive numbers over the whole 64-bit range.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Draws a comment text: mostly one to four words, and sometimes a paragraph.
pub(crate) fn random_text(rng: &mut StdRng) -> String {
    let words = if rng.gen_bool(LONG_SHARE) {
        rng.gen_range(15..=45)
    } else {
        rng.gen_range(1..=4)
    };
    let mut text = String::new();
    for n in 0..words {
        if n > 0 {
            text.push(' ');
        }
        text.push_str(WORDS[rng.gen_range(0..WORDS.len())]);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(seed: u64) -> SyntheticConfig {
        SyntheticConfig {
            duration_secs: 30.0,
            rate: 200.0,
            spike_every_secs: 10.0,
            spike_factor: 10.0,
            spike_secs: 3.0,
            seed,
        }
    }

    fn counts_per_second(comments: &[Comment], secs: usize) -> Vec<usize> {
        let mut counts = vec![0; secs];
        for c in comments {
            counts[c.at.as_secs() as usize] += 1;
        }
        counts
    }

    #[test]
    fn spike_windows_follow_parameters() {
        let c = config(1);
        assert!(!c.in_spike(0.5));
        assert!(!c.in_spike(9.99));
        assert!(c.in_spike(10.0));
        assert!(c.in_spike(12.9));
        assert!(!c.in_spike(13.0));
        assert!(c.in_spike(21.0));
    }

    #[test]
    fn no_spikes_when_every_is_zero() {
        let c = SyntheticConfig {
            spike_every_secs: 0.0,
            ..config(1)
        };
        assert!(!c.in_spike(10.0));
        assert_eq!(c.rate_at(10.0), 200.0);
    }

    #[test]
    fn base_seconds_have_base_rate() {
        let comments = generate(&config(7), None);
        let counts = counts_per_second(&comments, 30);
        for second in [0, 1, 5, 9, 13, 19, 25, 29] {
            let n = counts[second];
            assert!((150..=250).contains(&n), "second {second} has {n} comments");
        }
    }

    #[test]
    fn spike_seconds_have_factor_times_base() {
        let comments = generate(&config(7), None);
        let counts = counts_per_second(&comments, 30);
        for second in [10, 11, 12, 20, 21, 22] {
            let n = counts[second];
            assert!(
                (1800..=2200).contains(&n),
                "second {second} has {n} comments"
            );
        }
    }

    #[test]
    fn spike_mean_is_factor_times_base_mean() {
        let comments = generate(&config(3), None);
        let counts = counts_per_second(&comments, 30);
        let spike: usize = [10, 11, 12, 20, 21, 22].iter().map(|&s| counts[s]).sum();
        let base: usize = [1, 2, 3, 4, 5, 6].iter().map(|&s| counts[s]).sum();
        let ratio = spike as f64 / base as f64;
        assert!((9.0..=11.0).contains(&ratio), "spike/base ratio {ratio}");
    }

    #[test]
    fn same_seed_gives_same_comments() {
        assert_eq!(generate(&config(42), None), generate(&config(42), None));
    }

    #[test]
    fn different_seed_gives_different_comments() {
        assert_ne!(
            generate(&config(42), Some(50)),
            generate(&config(43), Some(50))
        );
    }

    #[test]
    fn times_increase_and_stay_in_duration() {
        let comments = generate(&config(5), None);
        assert!(comments.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(comments.last().unwrap().at < Duration::from_secs(30));
    }

    #[test]
    fn limit_caps_count() {
        assert_eq!(generate(&config(5), Some(100)).len(), 100);
    }

    #[test]
    fn texts_resemble_chat_sizes() {
        let comments = generate(&config(11), None);
        let total: usize = comments.iter().map(|c| c.text.len()).sum();
        let mean = total as f64 / comments.len() as f64;
        let longest = comments.iter().map(|c| c.text.len()).max().unwrap();
        assert!((15.0..=25.0).contains(&mean), "mean text size {mean} bytes");
        assert!(longest >= 100, "longest text is {longest} bytes");
    }

    #[test]
    fn texts_mix_scripts() {
        let comments = generate(&config(11), Some(2000));
        let has = |pred: fn(char) -> bool| comments.iter().any(|c| c.text.chars().any(pred));
        assert!(
            has(|ch| ('\u{4e00}'..='\u{9fff}').contains(&ch)),
            "no CJK text"
        );
        assert!(
            has(|ch| ('\u{1f300}'..='\u{1faff}').contains(&ch)),
            "no emoji"
        );
    }

    #[test]
    fn validate_rejects_zero_rate() {
        let c = SyntheticConfig {
            rate: 0.0,
            ..config(1)
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn validate_rejects_huge_runs() {
        let c = SyntheticConfig {
            rate: 1e9,
            ..config(1)
        };
        assert!(c.validate().is_err());
    }
}
