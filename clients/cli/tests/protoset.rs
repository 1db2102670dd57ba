//! `meshctl protoset`: the file it writes is the descriptor set of every mesh API, grpcurl
//! reads it without a server or the sources, and the copy shipped in the repository
//! (`proto/mesh.protoset`) is up to date.

use std::path::PathBuf;
use std::process::Command;

use prost::Message;

fn meshctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meshctl"))
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn services_of(bytes: &[u8]) -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(bytes).expect("a FileDescriptorSet");
    set.file
        .iter()
        .flat_map(|file| file.service.iter().map(move |service| format!("{}.{}", file.package(), service.name())))
        .collect()
}

#[test]
fn protoset_writes_every_mesh_service() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mesh.protoset");
    let status = meshctl().arg("protoset").arg(&out).status().unwrap();
    assert!(status.success());
    let services = services_of(&std::fs::read(&out).unwrap());
    for expected in [
        "mesh.session.v1.SessionService",
        "mesh.feed.v1.FeedService",
        "mesh.auth.v1.AuthService",
        "mesh.storage.v1.StorageService",
    ] {
        assert!(services.iter().any(|service| service == expected), "{expected} missing: {services:?}");
    }
}

#[test]
fn grpcurl_reads_the_protoset_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mesh.protoset");
    assert!(meshctl().arg("protoset").arg(&out).status().unwrap().success());
    let grpcurl = std::env::var_os("MESH_GRPCURL")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/bin/grpcurl"));
    assert!(grpcurl.is_file(), "grpcurl not found at {}: run scripts/install-tools", grpcurl.display());
    let output = Command::new(&grpcurl)
        .arg("-protoset")
        .arg(&out)
        .args(["describe", "mesh.session.v1.SessionService"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "grpcurl failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("rpc WatchSession"), "{stdout}");
}

#[test]
fn the_shipped_protoset_matches_the_protos() {
    let shipped = std::fs::read(workspace_root().join("proto/mesh.protoset")).expect("proto/mesh.protoset exists");
    assert!(
        shipped == mesh_proto::FILE_DESCRIPTOR_SET,
        "proto/mesh.protoset is stale: run `cargo run -p meshctl -- protoset proto/mesh.protoset`"
    );
}
