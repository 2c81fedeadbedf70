//! Progress bars on stderr for published and delivered comments.

use std::fmt;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// Two bars: comments published, and deliveries over all subscribers.
#[derive(Debug)]
pub(crate) struct Progress {
    published: ProgressBar,
    delivered: ProgressBar,
}

impl Progress {
    /// Creates the bars; with `visible` false they draw nothing.
    pub(crate) fn new(visible: bool, comments: u64, deliveries: u64) -> Progress {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let published = multi.add(bar(comments, "published"));
        let delivered = multi.add(bar(deliveries, "delivered"));
        Progress {
            published,
            delivered,
        }
    }

    pub(crate) fn update(&self, published: u64, delivered: u64) {
        self.published.set_position(published);
        self.delivered.set_position(delivered);
    }

    pub(crate) fn finish(&self) {
        self.published.abandon();
        self.delivered.abandon();
    }
}

fn bar(len: u64, label: &'static str) -> ProgressBar {
    let template = "{prefix:>9} [{bar:40}] {human_pos}/{human_len} {rate:>10} {elapsed_precise}";
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("rate", |state: &ProgressState, w: &mut dyn fmt::Write| {
            let _ = write!(w, "{:.0}/s", state.per_sec());
        })
        .progress_chars("=> ");
    ProgressBar::new(len).with_style(style).with_prefix(label)
}
