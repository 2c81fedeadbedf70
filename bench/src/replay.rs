//! The `replay` scenario: publish a chat log, or a synthetic one, through the broker and check
//! what every subscriber receives.

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context};
use chorus_client::Topic;
use clap::{ArgGroup, Args};

use crate::chatlog::{self, LogFormat};
use crate::net;
use crate::pacing::Speed;
use crate::progress::Progress;
use crate::publisher::{self, PublishPlan, Publisher, PublisherOutcome};
use crate::report::{render_text, Parameters, Summary};
use crate::state::RunState;
use crate::subscriber::{self, SubscriberOutcome};
use crate::summary::{summarize, RunOutcomes};
use crate::synthetic::{self, SyntheticConfig};
use crate::workload::{Comment, Workload};

/// How often the main thread updates progress and checks for the end of the run.
const TICK: Duration = Duration::from_millis(100);

/// How long threads get to stop after the deadline before they are reported as stuck.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Arguments of `chorus-bench replay`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("source").required(true).args(["log", "synthetic"])))]
pub(crate) struct ReplayArgs {
    /// Broker address as HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub(crate) server: String,

    /// Topic to publish to [default: bench/replay-<unix time>, a fresh topic per run].
    #[arg(long)]
    pub(crate) topic: Option<String>,

    /// Recorded chat log to replay.
    #[arg(long, value_name = "FILE")]
    pub(crate) log: Option<PathBuf>,

    /// Layout of the chat log.
    #[arg(long, value_enum, default_value_t = LogFormat::Youtube)]
    pub(crate) format: LogFormat,

    /// Generate comments instead of reading a log: a steady rate with periodic spikes.
    #[arg(long)]
    pub(crate) synthetic: bool,

    /// Length of the synthetic chat, in seconds.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 60.0,
        conflicts_with = "log"
    )]
    pub(crate) duration: f64,

    /// Base rate of the synthetic chat, in comments per second.
    #[arg(
        long,
        value_name = "PER_SEC",
        default_value_t = 100.0,
        conflicts_with = "log"
    )]
    pub(crate) rate: f64,

    /// Seconds between the starts of synthetic spikes; 0 for no spikes.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 20.0,
        conflicts_with = "log"
    )]
    pub(crate) spike_every: f64,

    /// Rate multiplier during a synthetic spike.
    #[arg(long, value_name = "X", default_value_t = 10.0, conflicts_with = "log")]
    pub(crate) spike_factor: f64,

    /// Length of each synthetic spike, in seconds.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 3.0,
        conflicts_with = "log"
    )]
    pub(crate) spike_secs: f64,

    /// Seed of the synthetic generator; the same seed gives the same comments.
    #[arg(long, default_value_t = 1, conflicts_with = "log")]
    pub(crate) seed: u64,

    /// Replay speed: 1 is real time, 100 is a hundred times faster, "max" or 0 sends as fast
    /// as possible.
    #[arg(long, default_value = "1")]
    pub(crate) speed: Speed,

    /// Replay only the first N comments.
    #[arg(long, value_name = "N")]
    pub(crate) limit: Option<usize>,

    /// Publisher connections; each author's comments always use the same one.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(crate) publishers: usize,

    /// Subscriber connections, each receiving and checking every comment.
    #[arg(long, value_name = "M", default_value_t = 10)]
    pub(crate) subscribers: usize,

    /// Max unacknowledged publishes per publisher connection; sending waits beyond it.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub(crate) max_in_flight: u64,

    /// Seconds to wait for outstanding acks and deliveries after the last publish.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub(crate) timeout: f64,

    /// Seconds to wait for each connection to be established.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub(crate) connect_timeout: f64,

    #[command(flatten)]
    pub(crate) tls: net::TlsArgs,

    /// Print the summary as JSON on stdout, and the text summary on stderr.
    #[arg(long)]
    pub(crate) json: bool,

    /// Also write the JSON summary to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
}

impl ReplayArgs {
    fn synthetic_config(&self) -> SyntheticConfig {
        SyntheticConfig {
            duration_secs: self.duration,
            rate: self.rate,
            spike_every_secs: self.spike_every,
            spike_factor: self.spike_factor,
            spike_secs: self.spike_secs,
            seed: self.seed,
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.publishers >= 1, "--publishers must be at least 1");
        ensure!(
            self.max_in_flight >= 1,
            "--max-in-flight must be at least 1"
        );
        ensure!(
            self.timeout.is_finite() && self.timeout >= 0.0,
            "--timeout must be a number of seconds >= 0"
        );
        ensure!(
            self.connect_timeout.is_finite() && self.connect_timeout > 0.0,
            "--connect-timeout must be a number of seconds > 0"
        );
        if self.synthetic {
            self.synthetic_config().validate()?;
        }
        Ok(())
    }

    fn parameters(&self, topic: &Topic) -> Parameters {
        Parameters {
            server: self.server.clone(),
            topic: topic.to_string(),
            source: if self.synthetic { "synthetic" } else { "log" },
            log: self.log.as_ref().map(|p| p.display().to_string()),
            format: self.log.as_ref().map(|_| self.format),
            synthetic: self.synthetic.then(|| self.synthetic_config()),
            speed: self.speed,
            limit: self.limit,
            publishers: self.publishers,
            subscribers: self.subscribers,
            max_in_flight: self.max_in_flight,
            timeout_secs: self.timeout,
        }
    }
}

/// Runs a replay and prints its summary; returns whether every check passed.
pub(crate) fn run(args: ReplayArgs) -> anyhow::Result<bool> {
    let summary = execute(&args)?;
    print_summary(&summary, args.json, args.out.as_deref())?;
    Ok(summary.passed)
}

/// Runs a replay and returns its summary.
fn execute(args: &ReplayArgs) -> anyhow::Result<Summary> {
    args.validate()?;
    let date = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let comments = load_comments(args)?;
    ensure!(!comments.is_empty(), "no comments to publish");
    let topic = topic_for(args.topic.as_deref())?;
    let parameters = args.parameters(&topic);
    let state = Arc::new(RunState::new(
        Workload::new(comments, args.publishers),
        topic,
    ));

    let connect_timeout = Duration::from_secs_f64(args.connect_timeout);
    let readies = subscribe_all(args, &state, connect_timeout)?;
    let connections = connect_publishers(args, connect_timeout)?;
    let server_name = connections
        .first()
        .map(|(writer, _)| writer.welcome().server_name.clone())
        .unwrap_or_default();
    eprintln!(
        "publishing {} comments on {} through {} publisher(s) to {} subscriber(s)",
        state.workload.len(),
        state.topic,
        args.publishers,
        args.subscribers
    );

    let comments = state.workload.len() as u64;
    let visible = !args.json && std::io::stderr().is_terminal();
    let progress = Progress::new(visible, comments, comments * args.subscribers as u64);
    let plan = PublishPlan {
        speed: args.speed,
        max_in_flight: args.max_in_flight,
        start: Instant::now(),
    };
    let subscribers: Vec<_> = readies
        .into_iter()
        .enumerate()
        .map(|(id, ready)| subscriber::spawn(id, ready, Arc::clone(&state)))
        .collect();
    let publishers: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(id, halves)| Publisher::spawn(id, halves, Arc::clone(&state), plan))
        .collect();

    let timeout = Duration::from_secs_f64(args.timeout);
    let schedule = Schedule::new(&state.workload, plan);
    let threads = Threads {
        publishers: &publishers,
        subscribers: &subscribers,
    };
    let mut end = wait_for_end(&state, threads, &schedule, &progress, timeout);
    progress.finish();
    let publisher_outcomes = collect_publishers(publishers, &mut end.errors);
    let subscriber_outcomes = collect_subscribers(subscribers, &state, &mut end.errors);

    let outcomes = RunOutcomes {
        publishers: publisher_outcomes,
        subscribers: subscriber_outcomes,
        errors: end.errors,
        start_nanos: state.nanos_at(plan.start),
        end_nanos: end.end_nanos,
        server_name,
    };
    Ok(summarize(outcomes, &state, date, parameters))
}

fn load_comments(args: &ReplayArgs) -> anyhow::Result<Vec<Comment>> {
    match &args.log {
        Some(path) => chatlog::read_log(path, args.format, args.limit),
        None => Ok(synthetic::generate(&args.synthetic_config(), args.limit)),
    }
}

fn topic_for(name: Option<&str>) -> anyhow::Result<Topic> {
    let name = match name {
        Some(name) => name.to_owned(),
        None => {
            let secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            format!("bench/replay-{secs}")
        }
    };
    Topic::new(name.clone()).with_context(|| format!("invalid topic {name:?}"))
}

/// Connects and subscribes every subscriber before anything is published.
fn subscribe_all(
    args: &ReplayArgs,
    state: &RunState,
    connect_timeout: Duration,
) -> anyhow::Result<Vec<subscriber::Ready>> {
    (0..args.subscribers)
        .map(|id| {
            let name = format!("chorus-bench/sub-{id}");
            let options = net::options(name, connect_timeout, args.tls.options());
            subscriber::subscribe(&args.server, &options, state)
                .with_context(|| format!("subscriber {id}"))
        })
        .collect()
}

fn connect_publishers(
    args: &ReplayArgs,
    connect_timeout: Duration,
) -> anyhow::Result<
    Vec<(
        chorus_client::ConnectionWriter,
        chorus_client::ConnectionReader,
    )>,
> {
    (0..args.publishers)
        .map(|id| {
            let name = format!("chorus-bench/pub-{id}");
            let options = net::options(name, connect_timeout, args.tls.options());
            publisher::connect(&args.server, &options).with_context(|| format!("publisher {id}"))
        })
        .collect()
}

/// End time and errors of the wait for the end of a run.
struct End {
    /// Time the wait ended, in nanoseconds of the run clock.
    end_nanos: u64,
    errors: Vec<String>,
}

/// Send times of all comments in increasing order, to tell a quiet stretch of the chat from a
/// stalled publisher.
struct Schedule {
    due: Vec<Instant>,
}

impl Schedule {
    fn new(workload: &Workload, plan: PublishPlan) -> Schedule {
        let mut due: Vec<Instant> = (0..workload.len())
            .map(|i| plan.start + plan.speed.due(workload.comment(i).at))
            .collect();
        due.sort_unstable();
        Schedule { due }
    }

    /// Returns when the next comment is due after `published` were sent.
    ///
    /// Publishers send in time order, so this is the `published`-th send time. It is exact
    /// with one publisher and an estimate with several.
    fn next_due(&self, published: u64) -> Option<Instant> {
        usize::try_from(published)
            .ok()
            .and_then(|n| self.due.get(n).copied())
    }
}

/// The threads of a run.
#[derive(Clone, Copy)]
struct Threads<'a> {
    publishers: &'a [Publisher],
    subscribers: &'a [JoinHandle<SubscriberOutcome>],
}

/// Updates progress until every thread is done, the deadline after the last publish has passed,
/// or publishing stalls.
///
/// Publishing counts as stalled when no publish went out for `timeout` after one was due, for
/// example because the in-flight window is full and acks stopped coming.
fn wait_for_end(
    state: &RunState,
    threads: Threads<'_>,
    schedule: &Schedule,
    progress: &Progress,
    timeout: Duration,
) -> End {
    let Threads {
        publishers,
        subscribers,
    } = threads;
    let mut errors = Vec::new();
    let mut last_published = 0;
    let mut last_progress = Instant::now();
    let mut deadline: Option<Instant> = None;
    loop {
        let published = RunState::count(&state.published);
        progress.update(published, RunState::count(&state.delivered));
        let now = Instant::now();
        if published != last_published {
            last_published = published;
            last_progress = now;
        }

        let publishers_done = publishers.iter().all(Publisher::is_finished);
        let subscribers_done = subscribers.iter().all(JoinHandle::is_finished);
        if publishers_done && subscribers_done {
            break;
        }
        if deadline.is_none() && publishers.iter().all(Publisher::writer_finished) {
            state.set_deadline(timeout);
            deadline = Some(now + timeout);
        }
        let waiting_since = schedule
            .next_due(published)
            .map_or(last_progress, |due| due.max(last_progress));
        if deadline.is_none() && now.saturating_duration_since(waiting_since) > timeout.max(TICK) {
            errors.push(format!(
                "publishing stalled: no publish for {:.1} s with {published} of {} sent",
                timeout.as_secs_f64(),
                state.workload.len()
            ));
            state.request_stop();
            deadline = Some(now);
        }
        if deadline.is_some_and(|d| now > d + STOP_GRACE) {
            state.request_stop();
            break;
        }
        thread::sleep(TICK);
    }
    End {
        end_nanos: state.now_nanos(),
        errors,
    }
}

fn collect_publishers(
    publishers: Vec<Publisher>,
    errors: &mut Vec<String>,
) -> Vec<PublisherOutcome> {
    let mut outcomes = Vec::new();
    for (id, publisher) in publishers.into_iter().enumerate() {
        if !publisher.is_finished() {
            errors.push(format!(
                "publisher {id}: threads did not stop; a write may be blocked"
            ));
            continue;
        }
        let outcome = publisher.join();
        for message in &outcome.errors.messages {
            errors.push(format!("publisher {id}: {message}"));
        }
        if outcome.errors.dropped > 0 {
            errors.push(format!(
                "publisher {id}: {} more errors",
                outcome.errors.dropped
            ));
        }
        outcomes.push(outcome);
    }
    outcomes
}

fn collect_subscribers(
    subscribers: Vec<JoinHandle<SubscriberOutcome>>,
    state: &RunState,
    errors: &mut Vec<String>,
) -> Vec<SubscriberOutcome> {
    let mut outcomes = Vec::new();
    for (id, handle) in subscribers.into_iter().enumerate() {
        if !handle.is_finished() {
            errors.push(format!("subscriber {id}: thread did not stop"));
            continue;
        }
        let outcome = handle
            .join()
            .unwrap_or_else(|_| subscriber::panicked(id, state));
        for message in &outcome.errors.messages {
            errors.push(format!("subscriber {id}: {message}"));
        }
        if outcome.errors.dropped > 0 {
            errors.push(format!(
                "subscriber {id}: {} more errors",
                outcome.errors.dropped
            ));
        }
        outcomes.push(outcome);
    }
    outcomes
}

fn print_summary(
    summary: &Summary,
    json: bool,
    out: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let text = render_text(summary);
    let encoded = serde_json::to_string_pretty(summary).context("failed to encode summary")?;
    // The file comes first, so a closed standard output (`| head`) cannot lose it.
    if let Some(path) = out {
        std::fs::write(path, format!("{encoded}\n"))
            .with_context(|| format!("failed to write summary to {}", path.display()))?;
    }
    let mut stdout = std::io::stdout().lock();
    let written = if json {
        eprint!("{text}");
        writeln!(stdout, "{encoded}")
    } else {
        write!(stdout, "{text}")
    };
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("failed to write the summary to standard output"),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::fake_broker::{FakeBroker, Fault};

    /// Parses replay arguments; a repeated option overrides the earlier value.
    #[derive(Debug, Parser)]
    #[command(args_override_self = true)]
    struct TestCli {
        #[command(flatten)]
        args: ReplayArgs,
    }

    fn replay(broker: &FakeBroker, extra: &[&str]) -> Summary {
        let addr = broker.addr();
        let mut argv = vec!["replay", "--server", addr.as_str(), "--json"];
        argv.extend_from_slice(extra);
        let cli = TestCli::try_parse_from(argv).unwrap();
        execute(&cli.args).unwrap()
    }

    const SYNTHETIC: &[&str] = &[
        "--synthetic",
        "--duration",
        "2",
        "--rate",
        "100",
        "--spike-every",
        "1",
        "--spike-secs",
        "0.2",
        "--timeout",
        "1",
        "--topic",
        "bench/test",
    ];

    /// Returns arguments for two seconds of synthetic chat sent at `speed`.
    fn synthetic_with(speed: &'static str, extra: &[&'static str]) -> Vec<&'static str> {
        let mut argv = SYNTHETIC.to_vec();
        argv.extend_from_slice(&["--speed", speed]);
        argv.extend_from_slice(extra);
        argv
    }

    #[test]
    fn clean_replay_passes() {
        let broker = FakeBroker::start(Fault::None);
        let summary = replay(
            &broker,
            &synthetic_with("max", &["--publishers", "3", "--subscribers", "4"]),
        );
        assert!(summary.passed, "{}", render_text(&summary));
        assert_eq!(summary.published, summary.comments);
        assert_eq!(summary.acked, summary.comments);
        assert_eq!(summary.counts.delivered, summary.comments * 4);
        assert_eq!(summary.publish_deliver_ms.count, summary.comments * 4);
    }

    #[test]
    fn dropped_event_is_loss_and_missing() {
        let broker = FakeBroker::start(Fault::Drop(5));
        let summary = replay(&broker, &synthetic_with("max", &["--subscribers", "2"]));
        assert!(!summary.passed);
        assert_eq!(summary.counts.losses, 2);
        assert_eq!(summary.missing, 2);
        assert_eq!(summary.missing_by_subscriber[0].first_indices, vec![5]);
    }

    #[test]
    fn duplicated_event_is_counted() {
        let broker = FakeBroker::start(Fault::Duplicate(3));
        let summary = replay(&broker, &synthetic_with("max", &["--subscribers", "2"]));
        assert!(!summary.passed);
        assert_eq!(summary.counts.duplicates, 2);
        assert_eq!(summary.missing, 0);
    }

    #[test]
    fn limit_caps_published_comments() {
        let broker = FakeBroker::start(Fault::None);
        let summary = replay(
            &broker,
            &synthetic_with("max", &["--limit", "25", "--subscribers", "1"]),
        );
        assert_eq!(summary.published, 25);
        assert!(summary.passed, "{}", render_text(&summary));
    }

    #[test]
    fn missing_acks_stall_publishing() {
        let broker = FakeBroker::start(Fault::NoAcks);
        let argv = synthetic_with("max", &["--max-in-flight", "5", "--timeout", "0.3"]);
        let summary = replay(&broker, &argv);
        assert!(!summary.passed);
        assert_eq!(summary.published, 5);
        assert_eq!(summary.unacked, 5);
        let stalled = summary
            .errors
            .iter()
            .any(|e| e.starts_with("publishing stalled"));
        assert!(stalled, "errors: {:?}", summary.errors);
    }

    #[test]
    fn quiet_chat_is_not_a_stall() {
        // About 0.5 s between comments, longer than the 0.2 s timeout.
        let broker = FakeBroker::start(Fault::None);
        let argv = [
            "--synthetic",
            "--rate",
            "2",
            "--spike-every",
            "0",
            "--limit",
            "3",
            "--timeout",
            "0.2",
            "--subscribers",
            "1",
        ];
        let summary = replay(&broker, &argv);
        assert!(summary.passed, "{}", render_text(&summary));
    }

    #[test]
    fn paced_replay_takes_recorded_time() {
        // Two seconds of synthetic chat at speed 4 take about half a second to publish.
        let broker = FakeBroker::start(Fault::None);
        let summary = replay(&broker, &synthetic_with("4", &["--subscribers", "1"]));
        assert!(summary.passed, "{}", render_text(&summary));
        assert!(
            summary.publish_secs >= 0.4,
            "published in {} s",
            summary.publish_secs
        );
    }
}
