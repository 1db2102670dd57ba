//! The mesh services this build of meshd can run, selected with `--services` (key
//! `services`). A service appears here when its crate lands, with its gRPC server and the
//! backends its health depends on; until then it is absent, never stubbed.

use mesh_core::config::ConfigError;

/// Short names of the services that will join the registry as their crates land; naming
/// one of them gives a clear "not in this build" answer instead of "unknown".
const PLANNED: &[&str] = &["session", "feed", "auth", "storage"];

/// One mesh service meshd can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceEntry {
    /// Short name used by `--services`, e.g. `session`.
    pub name: &'static str,
    /// Fully-qualified gRPC service names it serves (health and reflection report these).
    pub grpc_names: &'static [&'static str],
}

/// Every service of this build.
pub const AVAILABLE: &[ServiceEntry] = &[
    ServiceEntry { name: "session", grpc_names: &[mesh_proto::service_names::SESSION_V1] },
    ServiceEntry { name: "auth", grpc_names: &[mesh_proto::service_names::AUTH_V1] },
    ServiceEntry { name: "feed", grpc_names: &[mesh_proto::service_names::FEED_V1] },
    ServiceEntry { name: "storage", grpc_names: &[mesh_proto::service_names::STORAGE_V1] },
];

/// The services to run for the `services` setting: all of them when it is empty.
pub fn select(requested: &[String]) -> Result<Vec<ServiceEntry>, ConfigError> {
    if requested.is_empty() {
        return Ok(AVAILABLE.to_vec());
    }
    let mut selected = Vec::new();
    for name in requested {
        let Some(entry) = AVAILABLE.iter().find(|entry| entry.name == name) else {
            let problem = if PLANNED.contains(&name.as_str()) {
                format!("service `{name}` is not in this build of meshd yet")
            } else {
                format!("unknown service `{name}`")
            };
            return Err(ConfigError::new("services", problem, expected_names()));
        };
        if !selected.contains(entry) {
            selected.push(*entry);
        }
    }
    Ok(selected)
}

fn expected_names() -> String {
    if AVAILABLE.is_empty() {
        return "no value: this build serves only health and reflection".to_owned();
    }
    let names: Vec<&str> = AVAILABLE.iter().map(|entry| entry.name).collect();
    format!("a comma-separated list of: {}", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_selection_means_every_available_service() {
        assert_eq!(select(&[]).unwrap(), AVAILABLE.to_vec());
    }

    #[test]
    fn an_unknown_name_is_a_config_error_naming_the_key() {
        let error = select(&["bogus".to_owned()]).unwrap_err();
        assert_eq!(error.key, "services");
        assert!(error.problem.contains("bogus"));
    }
}
