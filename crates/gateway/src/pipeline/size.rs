//! Refuses activities larger than the configured limit, measured as compact JSON.

use async_trait::async_trait;

use super::{Rejection, Request, Stage, StageContext};
use switchboard_protocol::ProtocolError;

pub struct SizeLimit {
    pub max: usize,
}

/// Counts bytes written, stopping early once past the limit.
struct Counter {
    n: usize,
    max: usize,
}

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.n += buf.len();
        if self.n > self.max {
            return Err(std::io::Error::other("over limit"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[async_trait]
impl Stage for SizeLimit {
    fn name(&self) -> &'static str {
        "size-limit"
    }

    async fn run(&self, req: &mut Request, _: &StageContext<'_>) -> Result<(), Rejection> {
        let mut counter = Counter {
            n: 0,
            max: self.max,
        };
        if serde_json::to_writer(&mut counter, &req.raw).is_err() {
            return Err(ProtocolError::TooLarge { limit: self.max }.into());
        }
        Ok(())
    }
}
