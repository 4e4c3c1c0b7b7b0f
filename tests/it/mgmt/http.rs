//! A tiny HTTP/1.1 client over a tokio `TcpStream` (one request per connection), and
//! a test server with the management API open.

use crate::support::{TestServer, DEADLINE};
use base64ct::{Base64, Encoding};
use serde_json::Value;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server with the HTTP listener on an ephemeral port.
pub fn server() -> TestServer {
    TestServer::with(|s| s.http.bind = vec!["127.0.0.1:0".into()])
}

/// The server's HTTP address.
pub fn http_addr(server: &TestServer) -> SocketAddr {
    server.handle().http_addrs()[0]
}

/// One answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request builder bound to one server and (optionally) one user.
#[derive(Clone)]
pub struct Http {
    addr: SocketAddr,
    auth: Option<(String, String)>,
}

impl Http {
    /// As `guest` (an administrator).
    pub fn guest(server: &TestServer) -> Http {
        Http::new(server).user("guest", "guest")
    }

    /// Without credentials.
    pub fn new(server: &TestServer) -> Http {
        Http {
            addr: http_addr(server),
            auth: None,
        }
    }

    /// At `addr` (a broker in another process), without credentials.
    pub fn at(addr: SocketAddr) -> Http {
        Http { addr, auth: None }
    }

    /// With these credentials.
    pub fn user(mut self, name: &str, password: &str) -> Http {
        self.auth = Some((name.into(), password.into()));
        self
    }

    pub async fn get(&self, path: &str) -> Response {
        self.send("GET", path, &[], None).await
    }

    pub async fn put(&self, path: &str, body: &str) -> Response {
        self.send("PUT", path, &[], Some(body)).await
    }

    pub async fn post(&self, path: &str, body: &str) -> Response {
        self.send("POST", path, &[], Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.send("DELETE", path, &[], None).await
    }

    /// Sends one request and reads the whole answer (the server closes after it).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Response {
        tokio::time::timeout(DEADLINE, self.exchange(method, path, headers, body))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer within {DEADLINE:?}"))
    }

    async fn exchange(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Response {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some((u, p)) = &self.auth {
            let token = Base64::encode_string(format!("{u}:{p}").as_bytes());
            req.push_str(&format!("Authorization: Basic {token}\r\n"));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        let mut socket = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        socket.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        socket.read_to_end(&mut raw).await.unwrap();
        parse(&raw)
    }
}

/// Parses a whole HTTP/1.1 answer (sized or chunked body).
fn parse(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end: {}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..split]).expect("ASCII headers");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size = usize::from_str_radix(std::str::from_utf8(&data[..eol]).unwrap().trim(), 16)
            .expect("hex chunk size");
        data = &data[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Percent-encodes a path segment (everything but RFC 3986's unreserved characters).
pub fn enc(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
