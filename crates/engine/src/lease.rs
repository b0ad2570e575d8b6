//! Cluster-wide ownership of a name for a while: who runs a persistent platform instance.
//!
//! A persistent platform instance (one IRC login) must run on one node only, however many
//! nodes have sessions using it. The first node to need it takes its lease and runs the
//! worker; the others see who holds it and hand their jobs to the holder. The holder renews
//! the lease well within its TTL; a holder that dies stops renewing, the lease expires, and
//! the next node to need the instance takes it over.
//!
//! Holders are opaque strings chosen by the caller (the gateway puts its node and the
//! instance's queue in them). Several callers acquiring with the *same* holder string all
//! succeed and keep the lease alive together, which is how "someone still uses this" marks
//! are kept.

use std::time::Duration;

use async_trait::async_trait;

use crate::EngineError;

#[async_trait]
pub trait Leases: Send + Sync + 'static {
    /// Hold `name` as `holder` for `ttl` unless another holder has it. Returns the holder
    /// afterwards: `holder` itself when taken (or already held, which renews it), else the
    /// other holder, whose lease is left alone.
    async fn acquire(&self, name: &str, holder: &str, ttl: Duration)
    -> Result<String, EngineError>;

    /// Extend `holder`'s lease on `name` to `ttl` from now; `false` (and nothing changed)
    /// when `holder` does not hold it (any more).
    async fn renew(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, EngineError>;

    /// Give `name` up if `holder` holds it; `true` when it did. Never releases another
    /// holder's lease (one that took over after ours expired).
    async fn release(&self, name: &str, holder: &str) -> Result<bool, EngineError>;

    /// Who holds `name` now, if anyone.
    async fn holder(&self, name: &str) -> Result<Option<String>, EngineError>;
}
