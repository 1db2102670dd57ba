//! Generated code for the mesh APIs: one module per proto package (`mesh::session::v1`, ...),
//! each with its prost messages, a tonic client and a tonic server, plus the encoded
//! descriptor set that reflection serves and `meshctl protoset` writes for ghz and grpcurl.
//!
//! Nothing here is written by hand except the module tree; the `.proto` files under
//! `proto/mesh/` are the source of truth.

/// The encoded `FileDescriptorSet` of every mesh proto file and its imports (well-known
/// types included), with source info (comments). Register it with reflection or write it as a
/// protoset.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mesh_descriptor.bin"));

/// The proto packages of the mesh, one module per package.
// Generated stream responses hold a small heartbeat beside large events; boxing them would
// only make the generated API clumsier.
#[allow(clippy::large_enum_variant)]
pub mod mesh {
    /// Messages shared by every streaming RPC: positions, confirmations, heartbeats.
    pub mod stream {
        /// Version 1 of the stream contract.
        pub mod v1 {
            tonic::include_proto!("mesh.stream.v1");
        }
    }
    /// The Session service: sessions with optimistic locking and a sliding TTL.
    pub mod session {
        /// Version 1 of the Session API.
        pub mod v1 {
            tonic::include_proto!("mesh.session.v1");
        }
    }
    /// The Feed service: activity feeds with a live Subscribe stream.
    pub mod feed {
        /// Version 1 of the Feed API.
        pub mod v1 {
            tonic::include_proto!("mesh.feed.v1");
        }
    }
    /// The Auth service: users, login, tokens, JWKS and revocations.
    pub mod auth {
        /// Version 1 of the Auth API.
        pub mod v1 {
            tonic::include_proto!("mesh.auth.v1");
        }
    }
    /// The Storage service: signed upload/download URLs and file metadata.
    pub mod storage {
        /// Version 1 of the Storage API.
        pub mod v1 {
            tonic::include_proto!("mesh.storage.v1");
        }
    }
}

/// Fully-qualified gRPC service names of the mesh, as reflection and health report them.
pub mod service_names {
    /// `mesh.session.v1.SessionService`
    pub const SESSION_V1: &str = "mesh.session.v1.SessionService";
    /// `mesh.feed.v1.FeedService`
    pub const FEED_V1: &str = "mesh.feed.v1.FeedService";
    /// `mesh.auth.v1.AuthService`
    pub const AUTH_V1: &str = "mesh.auth.v1.AuthService";
    /// `mesh.storage.v1.StorageService`
    pub const STORAGE_V1: &str = "mesh.storage.v1.StorageService";
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn the_descriptor_set_holds_every_mesh_service() {
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("decodes");
        let services: Vec<String> = set
            .file
            .iter()
            .flat_map(|file| {
                let package = file.package().to_owned();
                file.service.iter().map(move |service| format!("{package}.{}", service.name()))
            })
            .collect();
        for name in
            [service_names::SESSION_V1, service_names::FEED_V1, service_names::AUTH_V1, service_names::STORAGE_V1]
        {
            assert!(services.iter().any(|s| s == name), "{name} missing from {services:?}");
        }
    }

    #[test]
    fn the_descriptor_set_includes_its_imports() {
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("decodes");
        assert!(set.file.iter().any(|file| file.name() == "google/protobuf/timestamp.proto"));
    }
}
