//! What the engine lends a step to execute its own actions: the nodes' connections, the
//! cluster checks, progress and follow-ups ([`Exec`]); and the one polling loop every wait uses
//! ([`poll`]).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::probe::HttpProbe;
use crate::remote::Remote;

/// The engine's primitives, as a step's own actions use them.
#[async_trait]
pub trait Exec: Send + Sync {
    /// The connection to `node`.
    fn remote(&self, node: &str) -> anyhow::Result<Arc<dyn Remote>>;

    /// Tells the user what is being waited for, for how long, and why it is not there yet.
    fn waiting(&self, node: Option<&str>, what: &str, elapsed: Duration, detail: String);

    /// Records something the user must do later (it goes into the report).
    fn follow_up(&self, text: String);

    /// One attempt at the full etcd health check against the plan's expectations: `Ok` with a
    /// one-line summary, `Err` with what is not right yet.
    async fn etcd_health(&self) -> Result<String, String>;

    /// One attempt at a node's apiserver readiness probe.
    async fn apiserver_ready(&self, node: &str, probe: &HttpProbe) -> Result<(), String>;
}

/// How long to wait before checking again what has waited `elapsed` so far: what is usually
/// quick (a pod going away, a member starting to serve) is seen within 100 ms; what takes
/// longer is checked twice a second. Every check is one short command on the node.
fn poll_pause(elapsed: Duration) -> Duration {
    if elapsed < Duration::from_secs(3) {
        Duration::from_millis(100)
    } else {
        Duration::from_millis(500)
    }
}

/// One wait: what is awaited, where, since when and until when.
pub struct Wait<'a> {
    /// The node, or `None` for the cluster.
    pub node: Option<&'a str>,
    /// What is awaited, e.g. `etcd to stop`.
    pub what: &'a str,
    /// When the wait began.
    pub started: Instant,
    /// When it gives up.
    pub deadline: Instant,
}

impl<'a> Wait<'a> {
    /// A wait of up to `timeout` seconds, starting now.
    pub fn new(node: Option<&'a str>, what: &'a str, timeout: u64) -> Wait<'a> {
        let started = Instant::now();
        Wait {
            node,
            what,
            started,
            deadline: started + Duration::from_secs(timeout),
        }
    }

    /// Tells the user the wait began.
    pub fn announce(&self, cx: &dyn Exec) {
        cx.waiting(self.node, self.what, Duration::ZERO, "first check".into());
    }
}

/// Checks until `check` finds nothing left to wait for (`Ok(None)`), telling the user what is
/// still pending between checks. Returns `Ok(Some(pending))` with what was still pending at
/// the deadline, and the check's own error at once.
pub async fn poll<F, Fut>(
    cx: &dyn Exec,
    wait: &Wait<'_>,
    mut check: F,
) -> anyhow::Result<Option<String>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<String>>>,
{
    loop {
        let Some(pending) = check().await? else {
            return Ok(None);
        };
        if Instant::now() >= wait.deadline {
            return Ok(Some(pending));
        }
        cx.waiting(wait.node, wait.what, wait.started.elapsed(), pending);
        tokio::time::sleep(poll_pause(wait.started.elapsed())).await;
    }
}
