//! `publish`: messages from the argument, a file or standard input (split per line, per
//! NUL-terminated record, or not at all), with confirms, returns and a summary.
//!
//! With `--confirm` (or `--mandatory`) every publish is confirm-tracked and sent
//! `mandatory` on the wire, so an unroutable message comes back before its confirm
//! and can be counted: as `returned` (printed, and an error) when the user asked for
//! `--mandatory`, as `unroutable` in the summary otherwise. For the broker a mandatory
//! message that reaches no queue is dropped just like a non-mandatory one; only the
//! `return` frame differs.

use super::args::Publish;
use super::flags::Split;
use super::Error;
use actormq::client::{Client, ClientError, Confirmation, PublishConfirm, PublishOptions};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, BufReader};

/// Publishes what `p` says; with confirms, returns once every message is settled.
pub async fn publish(client: &Client, p: Publish) -> Result<(), Error> {
    let track = p.confirm || p.mandatory;
    let mut publisher = Publisher {
        client,
        exchange: p.exchange,
        routing_key: p.routing_key,
        options: PublishOptions {
            mandatory: track,
            confirm: Some(track),
            properties: p.properties.properties(),
        },
        mandatory: p.mandatory,
        pending: FuturesUnordered::new(),
        tally: Tally::default(),
    };
    match (p.message, p.body_file) {
        (Some(m), _) => publisher.send(m.as_bytes()).await?,
        (None, Some(path)) if path.as_os_str() == "-" => {
            let stdin = BufReader::with_capacity(64 * 1024, tokio::io::stdin());
            read_records(stdin, p.split.unwrap_or(Split::None), &mut publisher).await?
        }
        (None, Some(path)) => {
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|e| format!("--body-file {}: {e}", path.display()))?;
            let file = BufReader::with_capacity(64 * 1024, file);
            read_records(file, p.split.unwrap_or(Split::None), &mut publisher).await?
        }
        (None, None) => {
            let stdin = BufReader::with_capacity(64 * 1024, tokio::io::stdin());
            read_records(stdin, p.split.unwrap_or(Split::Line), &mut publisher).await?
        }
    }
    let tally = publisher.finish().await?;
    if p.confirm {
        println!("{}", tally.summary(p.mandatory));
    }
    tally.verdict(p.mandatory)
}

/// Publishes each record of `input`, split as `split` says.
async fn read_records(
    mut input: impl AsyncBufRead + Unpin,
    split: Split,
    publisher: &mut Publisher<'_>,
) -> Result<(), Error> {
    let delimiter = match split {
        Split::None => {
            let mut all = Vec::new();
            input.read_to_end(&mut all).await?;
            return publisher.send(&all).await;
        }
        Split::Line => b'\n',
        Split::Nul => 0,
    };
    let mut record = Vec::new();
    loop {
        record.clear();
        if input.read_until(delimiter, &mut record).await? == 0 {
            return Ok(());
        }
        let body = match split {
            Split::Line => strip_newline(&record),
            _ => record.strip_suffix(&[0]).unwrap_or(&record),
        };
        publisher.send(body).await?;
    }
}

/// A line without its `\n` or `\r\n`.
fn strip_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Sends messages and settles their confirms as they come.
struct Publisher<'a> {
    /// The connection.
    client: &'a Client,
    /// Where to.
    exchange: String,
    /// With which key.
    routing_key: String,
    /// Properties, mandatory, confirm.
    options: PublishOptions,
    /// The user asked for --mandatory (returns are errors).
    mandatory: bool,
    /// Confirms not yet settled.
    pending: FuturesUnordered<PublishConfirm>,
    /// Counts so far.
    tally: Tally,
}

impl Publisher<'_> {
    async fn send(&mut self, body: &[u8]) -> Result<(), Error> {
        let confirm = self
            .client
            .publish_with(&self.exchange, &self.routing_key, body, &self.options)
            .await?;
        self.pending.push(confirm);
        self.tally.published += 1;
        // Settle what is already confirmed, so memory stays flat on long inputs.
        while let Some(Some(done)) = self.pending.next().now_or_never() {
            self.tally.settle(done, self.mandatory)?;
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<Tally, Error> {
        while let Some(done) = self.pending.next().await {
            self.tally.settle(done, self.mandatory)?;
        }
        Ok(self.tally)
    }
}

/// What became of the messages published.
#[derive(Debug, Default)]
struct Tally {
    /// Sent.
    published: u64,
    /// Confirmed by the broker (returned ones included: it confirms them too).
    confirmed: u64,
    /// Refused by the broker.
    nacked: u64,
    /// Reached no queue.
    unroutable: u64,
    /// The first refusal, for the error message.
    first_nack: Option<ClientError>,
}

impl Tally {
    /// Counts one settled publish. A connection failure ends the command.
    fn settle(
        &mut self,
        done: Result<Confirmation, ClientError>,
        mandatory: bool,
    ) -> Result<(), Error> {
        match done {
            Ok(c) => {
                self.confirmed += u64::from(c.is_confirmed());
                if let Some(r) = c.returned {
                    self.unroutable += 1;
                    if mandatory {
                        eprintln!(
                            "returned: {} {}, exchange {:?}, routing key {:?}: {:?}",
                            r.code,
                            r.reason,
                            r.exchange,
                            r.routing_key,
                            String::from_utf8_lossy(&r.body)
                        );
                    }
                }
                Ok(())
            }
            Err(e @ ClientError::Server { .. }) => {
                self.nacked += 1;
                self.first_nack.get_or_insert(e);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The one-line summary of `--confirm`.
    fn summary(&self, mandatory: bool) -> String {
        let label = if mandatory { "returned" } else { "unroutable" };
        format!(
            "published {}, confirmed {}, nacked {}, {label} {}",
            self.published, self.confirmed, self.nacked, self.unroutable
        )
    }

    /// Fails when a message was nacked, or returned under `--mandatory`.
    fn verdict(self, mandatory: bool) -> Result<(), Error> {
        if let Some(first) = self.first_nack {
            return Err(format!(
                "{first} ({} of {} messages nacked)",
                self.nacked, self.published
            )
            .into());
        }
        if mandatory && self.unroutable > 0 {
            return Err(format!(
                "{} of {} messages returned unroutable (312 NO_ROUTE)",
                self.unroutable, self.published
            )
            .into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actormq::ErrorCode;

    #[test]
    fn lines_lose_their_line_ending_only() {
        assert_eq!(strip_newline(b"a\n"), b"a");
        assert_eq!(strip_newline(b"a\r\n"), b"a");
        assert_eq!(strip_newline(b"a"), b"a");
        assert_eq!(strip_newline(b"\n"), b"");
        assert_eq!(strip_newline(b"a\rb\n"), b"a\rb");
    }

    #[test]
    fn the_tally_counts_and_judges() {
        let mut t = Tally {
            published: 3,
            ..Default::default()
        };
        t.settle(
            Ok(Confirmation {
                seq: 1,
                returned: None,
            }),
            false,
        )
        .unwrap();
        let nack = ClientError::Server {
            code: ErrorCode::NotFound,
            message: "no exchange 'x'".into(),
        };
        t.settle(Err(nack), false).unwrap();
        assert!(t.settle(Err(ClientError::Closed), false).is_err());
        assert_eq!(
            t.summary(false),
            "published 3, confirmed 1, nacked 1, unroutable 0"
        );
        let e = t.verdict(false).unwrap_err().to_string();
        assert_eq!(e, "NOT_FOUND - no exchange 'x' (1 of 3 messages nacked)");
    }
}
