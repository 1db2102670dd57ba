//! meshctl: the mesh's command-line client. Today it exports the compiled API descriptors;
//! domain commands (sessions, feeds, files) and the ghz-compatible load generator join it
//! as their services land.
//!
//! ```text
//! meshctl protoset <FILE>    write the protoset (FileDescriptorSet, imports included)
//!                            that ghz, grpcurl and buf curl read instead of the sources
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// meshctl: command-line client of the mesh.
#[derive(Debug, Parser)]
#[command(name = "meshctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the mesh APIs' descriptor set (a protoset, imports included) to FILE; `-`
    /// writes to stdout. Use it with `ghz --protoset`, `grpcurl -protoset` or `buf curl
    /// --schema`.
    Protoset {
        /// Where to write it.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("meshctl: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Protoset { file } => write_protoset(&file),
    }
}

fn write_protoset(file: &PathBuf) -> anyhow::Result<()> {
    if file.as_os_str() == "-" {
        use std::io::Write;
        return std::io::stdout().write_all(mesh_proto::FILE_DESCRIPTOR_SET).context("failed to write to stdout");
    }
    std::fs::write(file, mesh_proto::FILE_DESCRIPTOR_SET)
        .with_context(|| format!("failed to write {}", file.display()))?;
    eprintln!("meshctl: wrote {} ({} bytes)", file.display(), mesh_proto::FILE_DESCRIPTOR_SET.len());
    Ok(())
}
