//! A small HTTP/1.1 client for the management API: one request per connection
//! (`Connection: close`), basic auth, JSON bodies, sized or chunked answers. The CLI
//! needs nothing more, and tokio and serde_json are already here; an HTTP client crate
//! would bring TLS, pools and a second runtime's worth of code for four verbs.

use super::super::Error;
use base64ct::{Base64, Encoding};
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one request may take before the command gives up.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Where the management API is and as whom to ask.
#[derive(Debug, Clone)]
pub struct Api {
    /// `host:port`.
    authority: String,
    /// A path prefix (empty, or `/something` when the API is behind a proxy).
    prefix: String,
    /// `Basic ...`.
    auth: String,
}

/// One answer.
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON (`null` when empty).
    pub fn json(&self) -> Result<Value, Error> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("the management API answered something not JSON: {e}").into())
    }
}

/// Percent-encodes one path segment (the vhost `/` is `%2F`).
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

impl Api {
    /// The API at `url` (`http://host:port[/prefix]`), as `user`.
    pub fn new(url: &str, user: &str, password: &str) -> Result<Api, Error> {
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some((scheme, _)) => {
                return Err(
                    format!("--http-url {url}: only http:// is supported, not {scheme}://").into(),
                )
            }
            None => url,
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(format!("--http-url {url}: no host").into());
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let token = Base64::encode_string(format!("{user}:{password}").as_bytes());
        Ok(Api {
            authority,
            prefix: prefix.to_string(),
            auth: format!("Basic {token}"),
        })
    }

    /// Sends one request; `path` starts with `/api/`.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Answer, Error> {
        tokio::time::timeout(TIMEOUT, self.exchange(method, path, headers, body))
            .await
            .map_err(|_| {
                format!(
                    "{method} {path}: no answer from {} within {TIMEOUT:?}",
                    self.authority
                )
            })?
    }

    async fn exchange(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Answer, Error> {
        let body = body.unwrap_or_default();
        let mut req = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAuthorization: {}\r\nContent-Length: {}\r\n",
            self.prefix,
            self.authority,
            self.auth,
            body.len()
        );
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut socket = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| format!("cannot reach the management API at {}: {e}", self.authority))?;
        socket.write_all(req.as_bytes()).await?;
        socket.write_all(body).await?;
        let mut raw = Vec::new();
        socket.read_to_end(&mut raw).await?;
        parse(&raw)
    }

    /// A request whose answer must be a success: its JSON (`null` when empty). An
    /// error answer is the command's error, with the API's reason.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        let bytes = body.map(|b| b.to_string().into_bytes());
        let answer = self.send(method, path, &[], bytes.as_deref()).await?;
        check(method, path, &answer)?;
        answer.json()
    }

    /// `GET path`, which must succeed.
    pub async fn get(&self, path: &str) -> Result<Value, Error> {
        self.call("GET", path, None).await
    }
}

/// The error of an answer that is not a success: `STATUS error: reason`.
pub fn check(method: &str, path: &str, answer: &Answer) -> Result<(), Error> {
    if (200..300).contains(&answer.status) {
        return Ok(());
    }
    let reason = match answer.json() {
        Ok(v) if v["reason"].is_string() => format!(
            "{} - {}",
            v["error"].as_str().unwrap_or("error"),
            v["reason"].as_str().unwrap_or_default()
        ),
        _ => String::from_utf8_lossy(&answer.body).trim().to_string(),
    };
    Err(format!("{method} {path}: HTTP {}: {reason}", answer.status).into())
}

/// Parses a whole HTTP/1.1 answer.
fn parse(raw: &[u8]) -> Result<Answer, Error> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the management API closed the connection without a whole answer")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("not an HTTP answer")?;
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = &raw[split + 4..];
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok(Answer { status, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunked answer ended early")?;
        let line = std::str::from_utf8(&data[..eol])?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            return Err("a chunked answer ended early".into());
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_answers_are_parsed() {
        let api = Api::new("http://localhost:15672/mgmt/", "u", "p").unwrap();
        assert_eq!(api.authority, "localhost:15672");
        assert_eq!(api.prefix, "/mgmt");
        assert_eq!(
            Api::new("example.org", "u", "p").unwrap().authority,
            "example.org:80"
        );
        assert!(Api::new("https://x", "u", "p").is_err());
        let a = parse(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n").unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.json().unwrap(), serde_json::json!([1, 2]));
        assert_eq!(enc("/"), "%2F");
    }
}
