//! The read-mark scenario: what one `mark_read` costs once a conversation has a history.
//!
//! One pair of users. The sender fills the conversation with `history` messages (a window
//! of them in flight, credit returned by `message_sent`) and the reader marks them all
//! read once (the "first mark"). Then, `rounds` times, the sender sends one message, the
//! reader waits for it and marks it read, and the mark's round trip (`mark_read` written
//! to `mark_read_success` read) is recorded. Every round marks exactly one message, so a
//! server whose read mark walks the whole history shows a round trip that grows with
//! `history`, and one that walks only the unread messages does not. Closed loop, one
//! request at a time: this measures the cost of a mark, not a server under load.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::time::timeout;

use crate::chat::micros;
use crate::chat_conn::{ChatConn, Endpoint, Event};
use crate::chat_setup::Setup;
use crate::report::ReadReport;

/// Longest wait for any one expected frame.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the history may take to fill.
const FILL_TIMEOUT: Duration = Duration::from_secs(300);

/// What to run.
pub struct ReadParams {
    /// Messages in the conversation before the timed marks.
    pub history: u64,
    /// Timed marks of one message each.
    pub rounds: u64,
    /// Messages in flight while filling the history.
    pub window: u64,
    /// A wait between the fill and the first mark, so that the mark can land inside
    /// another load's measured run (what a long mark does to everyone else's messages).
    pub mark_delay: Duration,
}

pub async fn run(endpoint: &Endpoint, params: &ReadParams) -> Result<ReadReport> {
    let setup = Setup::new()?;
    let mut users = setup.register_users(&endpoint.base, "read", 2).await?;
    let (reader_user, sender_user) = match (users.pop(), users.pop()) {
        (Some(b), Some(a)) => (b, a),
        _ => bail!("registration returned fewer than two users"),
    };
    let mut sender = ChatConn::connect(endpoint, &sender_user.token).await?;
    let mut reader = ChatConn::connect(endpoint, &reader_user.token).await?;
    let to_reader = |content: String| json!({ "receiverId": reader_user.id, "content": content });
    let mark = json!({ "senderId": sender_user.id });

    // The reader drains its deliveries while the history fills, so that neither side's
    // socket buffers fill up and hold the sender back.
    let history = params.history;
    let drain = tokio::spawn(async move {
        let mut got = 0;
        while got < history {
            if let Event::NewMessage(_) = next_event(&mut reader).await? {
                got += 1;
            }
        }
        Ok::<_, anyhow::Error>(reader)
    });
    let filled = Instant::now();
    timeout(FILL_TIMEOUT, async {
        let (mut sent, mut acked) = (0, 0);
        while acked < history {
            while sent < history && sent - acked < params.window.max(1) {
                sender
                    .feed_chat(&to_reader(format!("history {sent}")))
                    .await?;
                sent += 1;
            }
            sender.flush().await?;
            if let Event::MessageSent(_) = next_event(&mut sender).await? {
                acked += 1;
            }
        }
        Ok::<_, anyhow::Error>(())
    })
    .await
    .map_err(|_| anyhow!("the history did not fill within {FILL_TIMEOUT:?}"))??;
    let mut reader = drain.await.context("the reader's task")??;
    let fill_s = filled.elapsed().as_secs_f64();

    tokio::time::sleep(params.mark_delay).await;
    let started = Instant::now();
    let first_count = mark_read(&mut reader, &mark).await?;
    let first_mark_us = micros(started.elapsed());
    if first_count != history {
        bail!("the first mark took {first_count} messages, not the {history} sent");
    }

    let mut marks = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for round in 0..params.rounds {
        sender
            .feed_chat(&to_reader(format!("round {round}")))
            .await?;
        sender.flush().await?;
        // The sender also gets the previous round's receipts; its own ack comes after them.
        while !matches!(next_event(&mut sender).await?, Event::MessageSent(_)) {}
        while !matches!(next_event(&mut reader).await?, Event::NewMessage(_)) {}
        let started = Instant::now();
        let count = mark_read(&mut reader, &mark).await?;
        marks.saturating_record(micros(started.elapsed()));
        if count != 1 {
            bail!("round {round}: the mark took {count} messages, not 1");
        }
    }
    sender.close().await;
    reader.close().await;
    Ok(ReadReport {
        mode: "chat-read",
        history,
        fill_s,
        first_mark_us,
        rounds: params.rounds,
        p50_us: marks.value_at_quantile(0.5),
        p90_us: marks.value_at_quantile(0.9),
        p99_us: marks.value_at_quantile(0.99),
        max_us: marks.max(),
    })
}

/// Sends `mark_read` and waits for its `mark_read_success`; returns the count it reports.
async fn mark_read(reader: &mut ChatConn, mark: &Value) -> Result<u64> {
    reader.feed("mark_read", mark).await?;
    reader.flush().await?;
    loop {
        if let Event::ReadMarked(data) = next_event(reader).await? {
            return data
                .count
                .ok_or_else(|| anyhow!("mark_read_success without a count"));
        }
    }
}

/// The next event on `conn`; a server error, a close or a silence is an error.
async fn next_event(conn: &mut ChatConn) -> Result<Event> {
    let frame = timeout(STEP_TIMEOUT, conn.next_frame())
        .await
        .map_err(|_| anyhow!("no frame within {STEP_TIMEOUT:?}"))?
        .ok_or_else(|| anyhow!("the server closed the connection"))??;
    match conn.decode(frame).await? {
        Event::Error(message) => bail!("server error: {message}"),
        Event::Closed => bail!("the server closed the connection"),
        event => Ok(event),
    }
}
