//! Just enough HTTP/1.1 for the stand-in: requests with a `Content-Length`
//! body, answers with one, and keep-alive, on one thread per connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// The largest request body accepted.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// A request as the handler sees it.
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names in lower case, with their values.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The value of header `name` (lower case), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An answer to send.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn json(status: u16, body: String) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body,
        }
    }

    pub fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: body.to_string(),
        }
    }
}

/// Serves one connection until the client closes it, or the handler returns
/// `None`, which drops the connection without an answer.
pub fn serve(stream: TcpStream, mut handle: impl FnMut(&Request) -> Option<Response>) {
    stream.set_nodelay(true).ok();
    let mut writer = match stream.try_clone() {
        Ok(writer) => writer,
        Err(_) => return,
    };
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    loop {
        let (request, close) = match read_request(&mut reader) {
            Some(parsed) => parsed,
            None => return,
        };
        let Some(response) = handle(&request) else {
            return;
        };
        if write_response(&mut writer, &response, close).is_err() || close {
            return;
        }
    }
}

/// Reads one request; `None` at the end of the connection or on garbage.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(Request, bool)> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut length = 0usize;
    let mut close = false;
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().ok()?;
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
        headers.push((name.to_ascii_lowercase(), value.to_string()));
    }
    if length > MAX_BODY {
        return None;
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((
        Request {
            method,
            path,
            headers,
            body,
        },
        close,
    ))
}

fn write_response(writer: &mut TcpStream, response: &Response, close: bool) -> std::io::Result<()> {
    let reason = match response.status {
        200 => "OK",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Length: {}\r\n",
        response.status,
        response.body.len()
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(response.body.as_bytes());
    writer.write_all(&bytes)
}
