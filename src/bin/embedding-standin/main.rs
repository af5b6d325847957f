//! `embedding-standin`: a stand-in for the Postfinder embedding API, for
//! tests, benchmarks and `scripts/run-local.sh`.
//!
//! It speaks the contract of the real API (`/health`, `/embed_posts`,
//! `/embed_post`, `/embed_query`) with vectors that depend only on what is
//! embedded, so a test can ask it for the vector a post must have. It answers
//! instantly unless told to act like the real model (`--delay-per-post-ms`,
//! `--slots`), and injects the real API's failures on demand:
//!
//! - an image URL containing `--unfetchable` (default `unfetchable`) fails the
//!   whole request with a plain-text 500, as an expired CDN URL does;
//! - a caption containing `[[fault:short]]`, `[[fault:width]]`,
//!   `[[fault:nan]]` or `[[fault:422]]` makes that request's answer one
//!   vector short, one number too wide, hold a `null`, or be a 422;
//! - `--fail 503=0.1,429=0.05,reset=0.02,malformed=0.01,timeout=0.01,500=0`
//!   fails that share of `/embed_posts` requests at random (seeded by
//!   `--seed`).
//!
//! `--token T` makes `/health` and `/embed_posts` answer 401 without
//! `Authorization: Bearer T`; `--require-header name:value` makes them answer
//! 403 without that header, as an access proxy does.
//!
//! `GET /stats` reports the requests and posts it has seen. It prints
//! `listening on ADDR` on stdout once it accepts connections.

mod http;
mod vectors;

use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use http::{Request, Response};

/// How the stand-in behaves, from its flags.
#[derive(Debug, Clone)]
struct Options {
    /// Address to listen on; port 0 picks a free one.
    listen: String,
    /// Simulated model time per post.
    delay_per_post: Duration,
    /// Requests the simulated accelerator works on at once.
    slots: usize,
    /// Random failures: (fault, share of requests).
    faults: Vec<(Fault, f64)>,
    /// Seed of the random failures.
    seed: u64,
    /// The `Retry-After` seconds sent with 429 and 503.
    retry_after: u64,
    /// An image URL containing this cannot be fetched.
    unfetchable: String,
    /// How long a `timeout` fault keeps the client waiting.
    hang: Duration,
    /// The bearer token required, if any.
    token: Option<String>,
    /// A header required, as (lower-case name, value).
    required_header: Option<(String, String)>,
}

/// A failure injected into a whole request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// 503 from the tunnel, with `Retry-After`.
    Unavailable,
    /// 429 with `Retry-After`.
    TooMany,
    /// The connection is dropped without an answer.
    Reset,
    /// A 200 whose body is not JSON.
    Malformed,
    /// No answer for `--hang`, then the connection is dropped.
    Timeout,
    /// A plain-text 500, as when the model itself fails.
    Internal,
}

/// What the stand-in has seen, for `/stats`.
#[derive(Default)]
struct Stats {
    /// `/embed_posts` requests received.
    requests: AtomicU64,
    /// Posts in those requests.
    posts: AtomicU64,
    /// Requests that were failed on purpose.
    faults: AtomicU64,
    /// When the first `/embed_posts` request came, in milliseconds since the
    /// Unix epoch (0 before), so a benchmark can time the job's start-up.
    first_request_ms: AtomicU64,
    /// The captions of the first posts received, in order, so a test can
    /// check the order posts are sent in.
    captions: Mutex<Vec<Option<String>>>,
}

/// How many captions `/stats` keeps.
const KEPT_CAPTIONS: usize = 1000;

/// Shared state of the server.
struct Server {
    options: Options,
    stats: Stats,
    /// The random generator's state.
    rng: Mutex<u64>,
    /// Free accelerator slots, when `--delay-per-post-ms` is set.
    free_slots: Mutex<usize>,
    slot_freed: Condvar,
}

fn main() {
    let options = match parse_options(std::env::args().skip(1).collect()) {
        Ok(options) => options,
        Err(problem) => {
            eprintln!("embedding-standin: {problem}");
            std::process::exit(2);
        }
    };
    let listener = TcpListener::bind(&options.listen).unwrap_or_else(|err| {
        eprintln!(
            "embedding-standin: cannot listen on {}: {err}",
            options.listen
        );
        std::process::exit(2);
    });
    let address = listener
        .local_addr()
        .expect("a bound listener has an address");
    println!("listening on {address}");
    std::io::stdout().flush().ok();

    let server = Arc::new(Server {
        rng: Mutex::new(options.seed.max(1)),
        free_slots: Mutex::new(options.slots),
        slot_freed: Condvar::new(),
        stats: Stats::default(),
        options,
    });
    for stream in listener.incoming().flatten() {
        let server = Arc::clone(&server);
        std::thread::spawn(move || http::serve(stream, |request| server.answer(request)));
    }
}

fn parse_options(args: Vec<String>) -> Result<Options, String> {
    let mut options = Options {
        listen: "127.0.0.1:0".to_string(),
        delay_per_post: Duration::ZERO,
        slots: 4,
        faults: Vec::new(),
        seed: 1,
        retry_after: 1,
        unfetchable: "unfetchable".to_string(),
        hang: Duration::from_secs(30),
        token: None,
        required_header: None,
    };
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |text: String| {
            text.parse::<f64>()
                .map_err(|_| format!("{flag}: not a number: {text}"))
        };
        match flag.as_str() {
            "--listen" => options.listen = value()?,
            "--delay-per-post-ms" => {
                options.delay_per_post = Duration::from_secs_f64(number(value()?)? / 1000.0)
            }
            "--slots" => options.slots = number(value()?)?.max(1.0) as usize,
            "--seed" => options.seed = number(value()?)? as u64,
            "--retry-after" => options.retry_after = number(value()?)? as u64,
            "--unfetchable" => options.unfetchable = value()?,
            "--hang-secs" => options.hang = Duration::from_secs_f64(number(value()?)?),
            "--fail" => options.faults = parse_faults(&value()?)?,
            "--token" => options.token = Some(value()?),
            "--require-header" => {
                let text = value()?;
                let (name, value) = text
                    .split_once(':')
                    .ok_or("--require-header: expected name:value")?;
                options.required_header =
                    Some((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(options)
}

fn parse_faults(text: &str) -> Result<Vec<(Fault, f64)>, String> {
    text.split(',')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (name, share) = part
                .split_once('=')
                .ok_or(format!("--fail: {part}: expected name=share"))?;
            let fault = match name {
                "503" => Fault::Unavailable,
                "429" => Fault::TooMany,
                "reset" => Fault::Reset,
                "malformed" => Fault::Malformed,
                "timeout" => Fault::Timeout,
                "500" => Fault::Internal,
                other => return Err(format!("--fail: unknown fault {other}")),
            };
            let share: f64 = share
                .parse()
                .map_err(|_| format!("--fail: {part}: bad share"))?;
            Ok((fault, share))
        })
        .collect()
}

/// One post as the API receives it.
#[derive(Deserialize)]
struct PostIn {
    caption: Option<String>,
    #[serde(default)]
    image_urls: Vec<String>,
}

#[derive(Deserialize)]
struct EmbedPostsIn {
    posts: Vec<PostIn>,
    dimension: Option<serde_json::Value>,
}

/// The answer of `/embed_posts`, serialised without an intermediate tree.
#[derive(Serialize)]
struct EmbedPostsOut<'a> {
    embeddings: &'a [Vec<f32>],
    dimension: usize,
    count: usize,
}

#[derive(Deserialize)]
struct EmbedPostIn {
    post: PostIn,
    dimension: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct EmbedQueryIn {
    query: String,
    dimension: Option<serde_json::Value>,
}

impl Server {
    /// The answer to one request; `None` drops the connection unanswered.
    fn answer(&self, request: &Request) -> Option<Response> {
        if matches!(request.path.as_str(), "/health" | "/embed_posts") {
            if let Some(refusal) = self.refuse(request) {
                return Some(refusal);
            }
        }
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/health") => Some(Response::json(
                200,
                r#"{"status": "ok", "model": "Qwen/Qwen3-VL-Embedding-2B"}"#.to_string(),
            )),
            ("GET", "/stats") => {
                let stats = serde_json::json!({
                    "requests": self.stats.requests.load(Ordering::Relaxed),
                    "posts": self.stats.posts.load(Ordering::Relaxed),
                    "faults": self.stats.faults.load(Ordering::Relaxed),
                    "first_request_ms": self.stats.first_request_ms.load(Ordering::Relaxed),
                    "captions": *self.stats.captions.lock().expect("captions lock"),
                });
                Some(Response::json(200, stats.to_string()))
            }
            ("POST", "/embed_posts") => self.embed_posts(&request.body),
            ("POST", "/embed_post") => Some(self.embed_post(&request.body)),
            ("POST", "/embed_query") => Some(embed_query(&request.body)),
            _ => Some(Response::text(404, r#"{"detail":"Not Found"}"#)),
        }
    }

    fn embed_posts(&self, body: &[u8]) -> Option<Response> {
        let request: EmbedPostsIn = match serde_json::from_slice(body) {
            Ok(request) => request,
            Err(err) => return Some(unprocessable(&err.to_string())),
        };
        let dimension = match dimension(request.dimension.as_ref()) {
            Ok(dimension) => dimension,
            Err(response) => return Some(response),
        };
        if self.stats.requests.fetch_add(1, Ordering::Relaxed) == 0 {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            let millis = now.map(|d| d.as_millis() as u64).unwrap_or_default();
            self.stats.first_request_ms.store(millis, Ordering::Relaxed);
        }
        self.stats
            .posts
            .fetch_add(request.posts.len() as u64, Ordering::Relaxed);
        {
            let mut captions = self.stats.captions.lock().expect("captions lock");
            let room = KEPT_CAPTIONS.saturating_sub(captions.len());
            captions.extend(
                request
                    .posts
                    .iter()
                    .take(room)
                    .map(|post| post.caption.clone()),
            );
        }

        // Step 1: the random transport failures, before any work.
        if let Some(fault) = self.draw_fault() {
            self.stats.faults.fetch_add(1, Ordering::Relaxed);
            return match fault {
                Fault::Unavailable => Some(self.retry_later(503, "Service Unavailable")),
                Fault::TooMany => Some(self.retry_later(429, "Too Many Requests")),
                Fault::Reset => None,
                Fault::Timeout => {
                    std::thread::sleep(self.options.hang);
                    None
                }
                Fault::Internal => Some(Response::text(500, "Internal Server Error")),
                Fault::Malformed => {
                    Some(Response::json(200, r#"{"embeddings": [[0.1, "#.to_string()))
                }
            };
        }

        // Step 2: the model's time, one post after another, on a free slot.
        self.occupy_slot(request.posts.len());

        // Step 3: a post whose image cannot be fetched fails the request.
        let unfetchable = &self.options.unfetchable;
        if request.posts.iter().any(|p| {
            p.image_urls
                .iter()
                .any(|u| u.contains(unfetchable.as_str()))
        }) {
            return Some(Response::text(500, "Internal Server Error"));
        }

        // Step 4: the vectors, with any fault a caption asks for.
        let marker = |name: &str| {
            request
                .posts
                .iter()
                .any(|p| p.caption.as_deref().is_some_and(|c| c.contains(name)))
        };
        if marker("[[fault:422]]") {
            return Some(unprocessable("fault requested by caption"));
        }
        let mut embeddings: Vec<Vec<f32>> = request
            .posts
            .iter()
            .map(|post| vectors::post_vector(post.caption.as_deref(), &post.image_urls, dimension))
            .collect();
        let count = embeddings.len();
        if marker("[[fault:short]]") {
            embeddings.pop();
        }
        if marker("[[fault:width]]") {
            embeddings[0].push(0.0);
        }
        if marker("[[fault:nan]]") {
            // serde_json writes a non-finite number as `null`, as orjson does.
            embeddings[0][0] = f32::NAN;
        }
        let answer = EmbedPostsOut {
            embeddings: &embeddings,
            dimension,
            count,
        };
        Some(Response::json(
            200,
            serde_json::to_string(&answer).expect("vectors serialise"),
        ))
    }

    fn embed_post(&self, body: &[u8]) -> Response {
        let request: EmbedPostIn = match serde_json::from_slice(body) {
            Ok(request) => request,
            Err(err) => return unprocessable(&err.to_string()),
        };
        let dimension = match dimension(request.dimension.as_ref()) {
            Ok(dimension) => dimension,
            Err(response) => return response,
        };
        let post = &request.post;
        let embedding = vectors::post_vector(post.caption.as_deref(), &post.image_urls, dimension);
        let json = serde_json::json!({"embedding": embedding, "dimension": dimension});
        Response::json(200, json.to_string())
    }

    /// The 401 or 403 an access proxy would answer, if the credentials
    /// asked for are missing.
    fn refuse(&self, request: &Request) -> Option<Response> {
        if let Some(token) = &self.options.token {
            if request.header("authorization") != Some(format!("Bearer {token}").as_str()) {
                return Some(Response::json(
                    401,
                    r#"{"detail":"Not authenticated"}"#.to_string(),
                ));
            }
        }
        if let Some((name, value)) = &self.options.required_header {
            if request.header(name) != Some(value.as_str()) {
                return Some(Response::text(403, "Forbidden"));
            }
        }
        None
    }

    /// Picks the random fault of this request, if any.
    fn draw_fault(&self) -> Option<Fault> {
        if self.options.faults.is_empty() {
            return None;
        }
        let draw = {
            let mut state = self.rng.lock().expect("rng lock");
            vectors::next_unit(&mut state)
        };
        let mut edge = 0.0;
        for (fault, share) in &self.options.faults {
            edge += share;
            if draw < edge {
                return Some(*fault);
            }
        }
        None
    }

    fn retry_later(&self, code: u16, text: &str) -> Response {
        let mut response = Response::text(code, text);
        response.headers.push((
            "Retry-After".to_string(),
            self.options.retry_after.to_string(),
        ));
        response
    }

    /// Holds one accelerator slot for the model time of `posts` posts.
    fn occupy_slot(&self, posts: usize) {
        if self.options.delay_per_post.is_zero() {
            return;
        }
        let mut free = self.free_slots.lock().expect("slot lock");
        while *free == 0 {
            free = self.slot_freed.wait(free).expect("slot lock");
        }
        *free -= 1;
        drop(free);
        std::thread::sleep(self.options.delay_per_post * posts as u32);
        *self.free_slots.lock().expect("slot lock") += 1;
        self.slot_freed.notify_one();
    }
}

fn embed_query(body: &[u8]) -> Response {
    let request: EmbedQueryIn = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => return unprocessable(&err.to_string()),
    };
    let dimension = match dimension(request.dimension.as_ref()) {
        Ok(dimension) => dimension,
        Err(response) => return response,
    };
    let embedding = vectors::post_vector(Some(&request.query), &[], dimension);
    Response::json(
        200,
        serde_json::json!({"embedding": embedding, "dimension": dimension}).to_string(),
    )
}

/// The requested width: `null` or absent is 2048; others must be offered.
fn dimension(value: Option<&serde_json::Value>) -> Result<usize, Response> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(vectors::NATIVE_WIDTH),
        Some(value) => match value.as_u64() {
            Some(n) if [64, 128, 256, 512, 1024, 2048].contains(&n) => Ok(n as usize),
            _ => Err(unprocessable(
                "dimension must be one of 64, 128, 256, 512, 1024, 2048",
            )),
        },
    }
}

/// A 422 shaped like the real API's validation errors.
fn unprocessable(msg: &str) -> Response {
    let detail =
        serde_json::json!({"detail": [{"loc": ["body"], "msg": msg, "type": "value_error"}]});
    Response::json(422, detail.to_string())
}
