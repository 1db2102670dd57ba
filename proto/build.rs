//! Compiles every `.proto` under `proto/mesh/` with protox (pure Rust: no system `protoc`)
//! and generates prost messages plus tonic clients and servers. The encoded descriptor set,
//! imports and comments included, is written to `OUT_DIR/mesh_descriptor.bin` for reflection
//! and protosets.

use std::path::{Path, PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let mut files = Vec::new();
    collect_protos(&root.join("mesh"), &mut files)?;
    files.sort();
    let relative: Vec<PathBuf> =
        files.iter().map(|file| file.strip_prefix(&root).map(Path::to_path_buf)).collect::<Result<_, _>>()?;

    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(&relative)?;
    let descriptor_set = compiler.file_descriptor_set();

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // Source info stays in: grpcurl and buf curl then show the proto comments when they
    // describe a service through reflection or the protoset.
    std::fs::write(out_dir.join("mesh_descriptor.bin"), descriptor_set.encode_to_vec())?;

    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptor_set)?;

    println!("cargo:rerun-if-changed=mesh");
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    Ok(())
}

fn collect_protos(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            files.push(path);
        }
    }
    Ok(())
}
