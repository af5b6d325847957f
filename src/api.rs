//! The embedding API client: one `POST /embed_posts` per batch, and the
//! checks an answer must pass before any of it is used.
//!
//! A 200 proves little: the answer must hold exactly one vector per post
//! sent, each of the requested width, every number finite. Anything else is
//! an error that says what was wrong, and nothing of that batch is used.
//! This module never touches the database.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::posts::Post;

/// The largest answer body read, far above the 1,000 posts × 2048 numbers
/// a valid answer can hold; a larger one is refused rather than buffered.
const MAX_ANSWER_BYTES: u64 = 256 * 1024 * 1024;

/// A client for one API, shared by every thread: the `ureq` agent keeps one
/// idle keep-alive connection per batch in flight and reuses it.
pub struct ApiClient {
    /// The agent holding the connection pool.
    agent: ureq::Agent,
    /// The base URL, without a trailing slash.
    base_url: String,
    /// The vector width asked for and required in answers.
    dimension: usize,
    /// Headers sent with every request: the bearer token and the extra
    /// headers. Secret; never logged.
    headers: Vec<(String, String)>,
}

/// Why a batch got no usable vectors.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// No answer: refused, reset, DNS, TLS, or the body was cut.
    Transport(String),
    /// No answer within the request timeout.
    Timeout,
    /// An answer other than 200.
    Status {
        /// The HTTP status code.
        code: u16,
        /// The start of the body, for the log.
        body: String,
        /// The wait the server asked for, if it said.
        retry_after: Option<Duration>,
    },
    /// A 200 whose body is not the JSON the contract describes.
    Malformed(String),
    /// A 200 with the wrong number of vectors.
    WrongCount {
        /// Posts in the request.
        sent: usize,
        /// Vectors in the answer.
        vectors: usize,
        /// The answer's `count`.
        count: u64,
    },
    /// A vector of the wrong width.
    WrongWidth {
        /// Position of the post in the batch.
        post: usize,
        /// The width asked for.
        expected: usize,
        /// The width received.
        got: usize,
    },
    /// A vector holding a NaN, an infinity or a `null`.
    NotFinite {
        /// Position of the post in the batch.
        post: usize,
    },
}

/// What an API failure says about where the fault lies, which decides what
/// the job does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The service or the way to it: retry the same batch later.
    Service,
    /// Possibly one post of the batch (a 500 from an unfetchable image, a
    /// 422, an answer that fails the checks): split the batch to find it.
    Batch,
    /// The job's own settings (a wrong URL or missing credentials): no retry
    /// and no rerun will help.
    Setup,
}

impl ApiError {
    /// Where the fault lies.
    pub fn blame(&self) -> Blame {
        match self {
            ApiError::Transport(_) | ApiError::Timeout | ApiError::Malformed(_) => Blame::Service,
            // 408 and 429 ask for patience; 502 to 504 and Cloudflare's 520
            // to 524 come from the tunnel when the machine is down or slow.
            ApiError::Status {
                code: 408 | 429 | 502..=504 | 520..=524,
                ..
            } => Blame::Service,
            // 500 is how one unfetchable image fails a whole request; 400,
            // 413 and 422 are about the body, so about its posts.
            ApiError::Status {
                code: 400 | 413 | 422 | 500,
                ..
            } => Blame::Batch,
            ApiError::Status {
                code: 401 | 403 | 404 | 405,
                ..
            } => Blame::Setup,
            ApiError::Status { code, .. } if *code >= 500 => Blame::Service,
            ApiError::Status { .. } => Blame::Setup,
            ApiError::WrongCount { .. }
            | ApiError::WrongWidth { .. }
            | ApiError::NotFinite { .. } => Blame::Batch,
        }
    }

    /// The wait the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short, stable name for counting failures by reason.
    pub fn kind(&self) -> String {
        match self {
            ApiError::Transport(_) => "api unreachable".to_string(),
            ApiError::Timeout => "api timeout".to_string(),
            ApiError::Status { code, .. } => format!("api status {code}"),
            ApiError::Malformed(_) => "api malformed answer".to_string(),
            ApiError::WrongCount { .. } => "api wrong vector count".to_string(),
            ApiError::WrongWidth { .. } => "api wrong vector width".to_string(),
            ApiError::NotFinite { .. } => "api non-finite number".to_string(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Transport(detail) => write!(f, "API unreachable: {detail}"),
            ApiError::Timeout => write!(f, "API did not answer within the request timeout"),
            ApiError::Status { code, body, .. } => write!(f, "API answered {code}: {body}"),
            ApiError::Malformed(detail) => write!(f, "API answer is not valid: {detail}"),
            ApiError::WrongCount {
                sent,
                vectors,
                count,
            } => write!(
                f,
                "API answered {vectors} vectors (count {count}) for a batch of {sent}"
            ),
            ApiError::WrongWidth {
                post,
                expected,
                got,
            } => write!(
                f,
                "API vector for post {post} of the batch has width {got}, expected {expected}"
            ),
            ApiError::NotFinite { post } => write!(
                f,
                "API vector for post {post} of the batch holds a non-finite number"
            ),
        }
    }
}

impl std::error::Error for ApiError {}

/// The request body of `/embed_posts`, borrowing the posts.
#[derive(Serialize)]
struct EmbedRequest<'a> {
    posts: Vec<PostPayload<'a>>,
    dimension: usize,
}

/// One post as the API receives it.
#[derive(Serialize)]
struct PostPayload<'a> {
    caption: Option<&'a str>,
    image_urls: Vec<&'a str>,
}

/// The answer of `/embed_posts`.
#[derive(Deserialize)]
struct EmbedAnswer {
    embeddings: Vec<Numbers>,
    count: u64,
}

/// One vector as received. Numbers are read leniently, `null` as NaN, so
/// that a bad number is reported as such by the checks, not as bad JSON.
struct Numbers(Vec<f32>);

impl ApiClient {
    /// A client for the API named in the settings. Opens no connection.
    pub fn new(settings: &Settings) -> ApiClient {
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(settings.connect_timeout))
            .timeout_global(Some(settings.request_timeout))
            .http_status_as_error(false)
            .max_idle_connections_per_host(settings.concurrency.max(1))
            .max_idle_connections(settings.concurrency.max(1))
            .user_agent(concat!("postfinder-embeddings/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let mut headers = Vec::new();
        if let Some(token) = &settings.api_token {
            headers.push((
                "authorization".to_string(),
                format!("Bearer {}", token.expose()),
            ));
        }
        for (name, value) in &settings.api_headers {
            headers.push((name.clone(), value.expose().to_string()));
        }
        ApiClient {
            agent,
            base_url: settings.api_url.clone(),
            dimension: settings.dimension,
            headers,
        }
    }

    /// `request` with the token and the extra headers.
    fn with_headers<B>(&self, mut request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        request
    }

    /// Asks `/health`; returns the model the API reports.
    pub fn health(&self) -> Result<String, ApiError> {
        let mut response = self
            .with_headers(self.agent.get(&format!("{}/health", self.base_url)))
            .call()
            .map_err(transport)?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().map_err(transport)?;
        if status != 200 {
            return Err(ApiError::Status {
                code: status,
                body: snippet(&body),
                retry_after: None,
            });
        }
        let health: serde_json::Value =
            serde_json::from_str(&body).map_err(|err| ApiError::Malformed(err.to_string()))?;
        Ok(health
            .get("model")
            .and_then(|m| m.as_str())
            .unwrap_or("unknown model")
            .to_string())
    }

    /// Embeds one batch. The vectors come back in the posts' order, each
    /// checked; on any error, none is returned.
    pub fn embed(&self, posts: &[Post]) -> Result<Vec<Vec<f32>>, ApiError> {
        // Step 1: the request, exactly the contract's shape.
        let request = EmbedRequest {
            posts: posts
                .iter()
                .map(|post| PostPayload {
                    caption: post.caption.as_deref(),
                    image_urls: post.image_url.as_deref().into_iter().collect(),
                })
                .collect(),
            dimension: self.dimension,
        };
        let body = serde_json::to_vec(&request).expect("a request always serialises");

        // Step 2: the call. Any status is an answer here; it is judged below.
        let request = self.agent.post(&format!("{}/embed_posts", self.base_url));
        let mut response = self
            .with_headers(request)
            .header("content-type", "application/json")
            .send(&body[..])
            .map_err(transport)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec()
            .map_err(transport)?;
        if status != 200 {
            let body = String::from_utf8_lossy(&bytes);
            return Err(ApiError::Status {
                code: status,
                body: snippet(&body),
                retry_after,
            });
        }

        // Step 3: the checks, before any number is used.
        let answer: EmbedAnswer =
            serde_json::from_slice(&bytes).map_err(|err| ApiError::Malformed(err.to_string()))?;
        check_answer(answer, posts.len(), self.dimension)
    }
}

/// The vectors of an answer, if it holds one finite vector of the right
/// width per post sent.
fn check_answer(
    answer: EmbedAnswer,
    sent: usize,
    dimension: usize,
) -> Result<Vec<Vec<f32>>, ApiError> {
    if answer.embeddings.len() != sent || answer.count != sent as u64 {
        return Err(ApiError::WrongCount {
            sent,
            vectors: answer.embeddings.len(),
            count: answer.count,
        });
    }
    for (post, Numbers(vector)) in answer.embeddings.iter().enumerate() {
        if vector.len() != dimension {
            return Err(ApiError::WrongWidth {
                post,
                expected: dimension,
                got: vector.len(),
            });
        }
        if !vector.iter().all(|x| x.is_finite()) {
            return Err(ApiError::NotFinite { post });
        }
    }
    Ok(answer
        .embeddings
        .into_iter()
        .map(|Numbers(vector)| vector)
        .collect())
}

/// Maps a `ureq` failure to the error kinds the job acts on.
fn transport(err: ureq::Error) -> ApiError {
    match err {
        ureq::Error::Timeout(_) => ApiError::Timeout,
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => ApiError::Timeout,
        other => ApiError::Transport(other.to_string()),
    }
}

/// The first line of a body, cut short, for a log line.
fn snippet(body: &str) -> String {
    let line = body.trim().lines().next().unwrap_or_default();
    let mut cut: String = line.chars().take(200).collect();
    if cut.len() < line.len() {
        cut.push('…');
    }
    cut
}

impl<'de> Deserialize<'de> for Numbers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(NumbersVisitor)
    }
}

struct NumbersVisitor;

impl<'de> Visitor<'de> for NumbersVisitor {
    type Value = Numbers;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of numbers")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Numbers, A::Error> {
        let mut numbers = Vec::with_capacity(seq.size_hint().unwrap_or(512));
        while let Some(Number(x)) = seq.next_element()? {
            numbers.push(x);
        }
        Ok(Numbers(numbers))
    }
}

/// One number of a vector: any JSON number, or `null` read as NaN.
struct Number(f32);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NumberVisitor)
    }
}

struct NumberVisitor;

impl Visitor<'_> for NumberVisitor {
    type Value = Number;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number")
    }

    fn visit_f64<E: de::Error>(self, x: f64) -> Result<Number, E> {
        Ok(Number(x as f32))
    }

    fn visit_i64<E: de::Error>(self, x: i64) -> Result<Number, E> {
        Ok(Number(x as f32))
    }

    fn visit_u64<E: de::Error>(self, x: u64) -> Result<Number, E> {
        Ok(Number(x as f32))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Number, E> {
        Ok(Number(f32::NAN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str, sent: usize, dimension: usize) -> Result<Vec<Vec<f32>>, ApiError> {
        let answer: EmbedAnswer =
            serde_json::from_str(json).map_err(|e| ApiError::Malformed(e.to_string()))?;
        check_answer(answer, sent, dimension)
    }

    #[test]
    fn a_good_answer_passes_in_order() {
        let vectors = check(r#"{"embeddings":[[1,0],[0.6,0.8]],"count":2}"#, 2, 2).unwrap();
        assert_eq!(vectors, vec![vec![1.0, 0.0], vec![0.6, 0.8]]);
    }

    #[test]
    fn a_short_answer_is_refused() {
        let err = check(r#"{"embeddings":[[1,0]],"count":1}"#, 2, 2).unwrap_err();
        assert!(
            matches!(
                err,
                ApiError::WrongCount {
                    sent: 2,
                    vectors: 1,
                    ..
                }
            ),
            "{err}"
        );
        let err = check(r#"{"embeddings":[[1,0],[0,1]],"count":3}"#, 2, 2).unwrap_err();
        assert!(matches!(err, ApiError::WrongCount { .. }), "{err}");
    }

    #[test]
    fn a_wrong_width_is_refused() {
        let err = check(r#"{"embeddings":[[1,0],[0,1,0]],"count":2}"#, 2, 2).unwrap_err();
        assert_eq!(
            err,
            ApiError::WrongWidth {
                post: 1,
                expected: 2,
                got: 3
            }
        );
    }

    #[test]
    fn null_and_overflow_are_not_finite() {
        let err = check(r#"{"embeddings":[[1,null]],"count":1}"#, 1, 2).unwrap_err();
        assert_eq!(err, ApiError::NotFinite { post: 0 });
        let err = check(r#"{"embeddings":[[1,1e39]],"count":1}"#, 1, 2).unwrap_err();
        assert_eq!(err, ApiError::NotFinite { post: 0 });
    }

    #[test]
    fn a_body_that_is_not_the_contract_is_malformed() {
        assert!(matches!(check("<html>", 1, 2), Err(ApiError::Malformed(_))));
        assert!(matches!(
            check(r#"{"embeddings":[]}"#, 0, 2),
            Err(ApiError::Malformed(_))
        ));
    }
}
