//! A declare's counts through a stand-in: RabbitMQ answers `queue.declare` (passive
//! or not) with the queue's real ready messages and consumers from any node, so a
//! stand-in, which holds nothing, asks its home ([`Rpc::DeclareCounts`]) with a
//! deadline. A home that does not answer makes the declare fail with `NOT_FOUND`
//! naming it, as RabbitMQ answers for a classic queue whose node is down ("home node
//! ... is down or inaccessible"), rather than counts that look real and are not.

use super::*;
use crate::broker::queue::actor::{DeclareCounts, GetDeclareCounts};

/// How long a stand-in waits for its home's counts (connecting included).
pub const COUNTS_WAIT: Duration = Duration::from_secs(5);

/// The connection a stand-in asks its home's counts on, kept between declares (an
/// application that declares its queue before each publish opens none per declare).
#[derive(Default)]
pub(in crate::cluster) struct CountsLink(std::sync::Mutex<Option<(String, Arc<Link>)>>);

impl CountsLink {
    /// The link to `addr` (a new one when the home's address changed).
    fn to(&self, addr: &str, transport: &Arc<Transport>) -> Arc<Link> {
        let mut cached = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match cached.as_ref() {
            Some((a, link)) if a == addr => link.clone(),
            _ => {
                let link = Arc::new(Link::new(addr, transport.clone()));
                *cached = Some((addr.to_string(), link.clone()));
                link
            }
        }
    }
}

impl Home {
    /// The home queue's counts for a declare, asked within [`COUNTS_WAIT`] on the
    /// cluster's runtime; `NOT_FOUND` naming the home when it cannot be asked.
    pub fn declare_counts(
        &self,
    ) -> impl std::future::Future<Output = Result<DeclareCounts, BrokerError>> + Send + 'static
    {
        let t = self.target.clone();
        let link = (t.addr)().map(|addr| self.counts.to(&addr, &t.transport));
        let rt = self.rt.clone();
        async move {
            let Some(link) = link else {
                return Err(home_down(&t, "its address is unknown"));
            };
            let rpc = Rpc::DeclareCounts {
                vhost: t.vhost.clone(),
                queue: t.queue.clone(),
                from: t.from,
            };
            // On the cluster's runtime, where its connections live.
            let call = rt.spawn(async move { link.call(&rpc, COUNTS_WAIT).await });
            match call.await {
                Ok(Ok(Reply::DeclareCounts(counts))) => counts,
                Ok(Ok(other)) => Err(BrokerError::internal(format!(
                    "queue '{}': unexpected reply from node {}: {other:?}",
                    t.queue, t.home
                ))),
                Ok(Err(e)) => Err(home_down(&t, &e.to_string())),
                Err(e) => Err(BrokerError::internal(format!(
                    "the cluster's runtime stopped: {e}"
                ))),
            }
        }
    }
}

/// The refusal of a declare whose home cannot be asked.
fn home_down(t: &Target, why: &str) -> BrokerError {
    BrokerError::new(
        ErrorCode::NotFound,
        format!(
            "queue '{}' in vhost '{}': its home node {} is down or inaccessible ({why})",
            t.queue, t.vhost, t.home
        ),
    )
}

/// The home's side: its queue's counts, if this node is its home (`here`, from the
/// applied log).
pub(in crate::cluster) async fn answer(
    broker: BrokerHandle,
    here: Option<bool>,
    vhost: String,
    queue: String,
) -> Result<DeclareCounts, BrokerError> {
    if here.is_none() {
        // The queue's declare is not applied here yet (the asking node applied it
        // first): it holds nothing yet.
        return Ok(DeclareCounts::default());
    }
    if here != Some(true) {
        // Never asked of a second node: its stand-in would ask on.
        return Err(BrokerError::new(
            ErrorCode::NotFound,
            format!("queue '{queue}' in vhost '{vhost}' does not live on this node"),
        ));
    }
    let registry = broker.registry(&vhost)?;
    let handle = registry
        .send(LookupQueue {
            name: queue.clone(),
            owner: broker.new_owner(),
        })
        .await
        .map_err(|e| BrokerError::internal(format!("registry: {e}")))??;
    let local = handle
        .addr()
        .send(GetDeclareCounts)
        .await
        .map_err(|_| BrokerError::not_found("queue", &queue, &vhost))??;
    Ok(local.counts)
}
