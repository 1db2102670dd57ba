//! grpc.health.v1 statuses. Each served gRPC service reports SERVING while every backend it
//! depends on answers its probe, and NOT_SERVING while one does not; the overall status
//! (service name "") follows the server's life. At shutdown everything turns NOT_SERVING
//! first, so load balancers stop sending before the drain ends.

use std::sync::Arc;
use std::time::Duration;

use mesh_core::backend::BackendProbe;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// A gRPC service and the backends its health depends on.
#[derive(Clone)]
pub struct HealthTarget {
    /// Fully-qualified gRPC service name, as clients ask for it.
    pub service: String,
    /// Probes of the backends it needs; none means it is healthy while the process runs.
    pub probes: Vec<Arc<dyn BackendProbe>>,
}

impl std::fmt::Debug for HealthTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let probes: Vec<&str> = self.probes.iter().map(|probe| probe.name()).collect();
        f.debug_struct("HealthTarget").field("service", &self.service).field("probes", &probes).finish()
    }
}

/// Probes every target now, then every `interval` until `stop` fires, and reports status
/// changes through `reporter`. The first round finishes before this returns, so statuses
/// are right from the first request on.
pub async fn spawn_monitor(
    reporter: HealthReporter,
    targets: Vec<HealthTarget>,
    interval: Duration,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let mut last: Vec<Option<ServingStatus>> = vec![None; targets.len()];
    probe_all(&reporter, &targets, &mut last).await;
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => probe_all(&reporter, &targets, &mut last).await,
            }
        }
    })
}

async fn probe_all(reporter: &HealthReporter, targets: &[HealthTarget], last: &mut [Option<ServingStatus>]) {
    for (target, last) in targets.iter().zip(last.iter_mut()) {
        let mut status = ServingStatus::Serving;
        for probe in &target.probes {
            if let Err(error) = probe.check().await {
                tracing::warn!(service = %target.service, backend = probe.name(), error = %error, "backend unavailable");
                status = ServingStatus::NotServing;
                break;
            }
        }
        if *last != Some(status) {
            if last.is_some() {
                tracing::info!(service = %target.service, status = ?status, "health status changed");
            }
            reporter.set_service_status(&target.service, status).await;
            *last = Some(status);
        }
    }
}

/// Turns the overall status and every target NOT_SERVING (the first step of shutdown).
pub async fn report_shutdown(reporter: &HealthReporter, targets: &[HealthTarget]) {
    reporter.set_service_status("", ServingStatus::NotServing).await;
    for target in targets {
        reporter.set_service_status(&target.service, ServingStatus::NotServing).await;
    }
}
