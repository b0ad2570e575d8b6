//! The embedded backends: in-process, nothing to install, state gone at exit.

mod broker;
mod credentials;
mod lease;
mod queue;
mod registry;

pub use broker::MemoryBroker;
pub use credentials::MemoryCredentialStore;
pub use lease::MemoryLeases;
pub use queue::MemoryQueue;
pub use registry::MemoryRegistry;

/// Lock a std mutex, recovering the data if a panicking thread poisoned it: every critical
/// section here leaves the maps consistent before anything that could panic.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
