//! Settling one batch against an API that fails: every post of the batch
//! ends embedded, rejected on its own, or unfinished (left for the next run).
//!
//! - A failure the service causes (no answer, 429, 502 to 504, 524, a body
//!   that is not JSON) is retried with backoff, the same batch, until the API
//!   has answered nothing well for `OUTAGE_LIMIT`; then the run stops.
//! - A failure one post can cause (500, 422, an answer that fails the
//!   checks) splits the batch in halves, recursively, so that the healthy
//!   posts are embedded in this run. A post that fails alone twice is a
//!   suspect.
//! - Suspects are rejected only if the API works: it answered something
//!   well since the batch was first sent, or it embeds a probe (a caption
//!   without image) now. Otherwise the API itself is broken, not the posts:
//!   the suspects are retried together, as an outage.
//!
//! The cost of one bad post in a batch of `n` is at most `2⌈log2 n⌉ + 2`
//! extra requests (the last one a probe, when nothing else succeeded). This module never touches the database.

use std::time::Duration;

use crate::api::{ApiClient, ApiError, Blame};
use crate::posts::Post;
use crate::retry::{self, Availability, Backoff};
use crate::shutdown::{Cause, Shutdown};

/// How every post of a batch ended.
#[derive(Debug, Default)]
pub struct Settled {
    /// Posts with their checked vectors.
    pub embedded: Vec<(Post, Vec<f32>)>,
    /// Posts that failed alone while the API worked, with the last error.
    pub rejected: Vec<(Post, ApiError)>,
    /// Posts not settled because the run is stopping.
    pub unfinished: Vec<Post>,
}

/// What the settling of a batch needs from the run.
pub struct Context<'a> {
    pub api: &'a ApiClient,
    /// The API's outage clock.
    pub availability: &'a Availability,
    pub shutdown: &'a Shutdown,
}

impl Context<'_> {
    /// Settles `posts`, one batch.
    pub fn settle(&self, posts: Vec<Post>) -> Settled {
        let successes_before = self.availability.successes();
        let mut settled = Settled::default();
        let mut backoff = Backoff::new();
        let mut pending = posts;

        loop {
            let suspects = self.embed_or_split(pending, &mut settled);
            if suspects.is_empty() {
                return settled;
            }

            // The API answered other requests well since this batch was
            // sent, or answers a probe now: the suspects are at fault.
            if self.availability.successes() > successes_before || self.probe() {
                for (post, err) in suspects {
                    log::warn!(
                        ig_media_id = post.id.as_str(), reason = err.kind().as_str();
                        "post {} rejected: {err}", post.id
                    );
                    settled.rejected.push((post, err));
                }
                return settled;
            }

            // Nothing worked anywhere: an outage that looks like bad posts.
            let last = suspects
                .last()
                .map(|(_, err)| err.to_string())
                .unwrap_or_default();
            pending = suspects.into_iter().map(|(post, _)| post).collect();
            if !self.wait(&mut backoff, None, &last) {
                settled.unfinished.extend(pending);
                return settled;
            }
        }
    }

    /// Sends `posts` as one batch, retrying while the service is at fault,
    /// splitting while the batch may be. Returns the posts that failed
    /// alone in a way a post can cause.
    fn embed_or_split(&self, posts: Vec<Post>, settled: &mut Settled) -> Vec<(Post, ApiError)> {
        let mut backoff = Backoff::new();
        let mut alone_failures = 0;
        loop {
            if self.shutdown.is_stopping() {
                settled.unfinished.extend(posts);
                return Vec::new();
            }
            let err = match self.api.embed(&posts) {
                Ok(vectors) => {
                    self.availability.success();
                    settled.embedded.extend(posts.into_iter().zip(vectors));
                    return Vec::new();
                }
                Err(err) => err,
            };

            match err.blame() {
                Blame::Service => {
                    log::debug!("batch of {} posts: {err}; retrying", posts.len());
                    if !self.wait(&mut backoff, err.retry_after(), &err.to_string()) {
                        settled.unfinished.extend(posts);
                        return Vec::new();
                    }
                }
                Blame::Setup => {
                    self.shutdown
                        .stop(Cause::Setup(format!("the API refuses requests: {err}")));
                    settled.unfinished.extend(posts);
                    return Vec::new();
                }
                Blame::Batch if posts.len() > 1 => {
                    log::info!(posts = posts.len(); "batch of {} posts: {err}; splitting it", posts.len());
                    let mut left = posts;
                    let right = left.split_off(left.len() / 2);
                    let mut suspects = self.embed_or_split(left, settled);
                    suspects.extend(self.embed_or_split(right, settled));
                    return suspects;
                }
                Blame::Batch => {
                    // One retry: a 500 can be a passing fault too.
                    alone_failures += 1;
                    if alone_failures >= 2 {
                        let post = posts.into_iter().next().expect("one post");
                        return vec![(post, err)];
                    }
                }
            }
        }
    }

    /// Whether the API embeds a post that cannot be at fault: a caption
    /// without image. Settles, in one request, whether an API failing a
    /// batch's every post is broken or the posts are, when nothing else
    /// was sent meanwhile (a rerun whose only due posts are bad ones).
    fn probe(&self) -> bool {
        let probe = Post {
            id: "probe".to_string(),
            caption: Some("postfinder-embeddings probe".to_string()),
            image_url: None,
        };
        let works = self.api.embed(std::slice::from_ref(&probe)).is_ok();
        if works {
            self.availability.success();
        }
        works
    }

    /// Waits before the next attempt; `false` when there is none.
    fn wait(&self, backoff: &mut Backoff, asked: Option<Duration>, last_error: &str) -> bool {
        retry::wait_to_retry(self.availability, backoff, asked, self.shutdown, last_error)
    }
}
