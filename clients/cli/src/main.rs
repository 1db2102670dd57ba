//! meshctl: the mesh's command-line client. It exports the compiled API descriptors and runs
//! operator commands against a meshd; more domain commands and the ghz-compatible load
//! generator join it as their services land.
//!
//! ```text
//! meshctl protoset <FILE>              write the protoset (FileDescriptorSet, imports
//!                                      included) that ghz, grpcurl and buf curl read
//! meshctl feed rebuild --tenant <T>    rebuild tenant T's feed read models from the
//!                                      durable archive (an admin token of T in
//!                                      MESH_TOKEN or --token; meshd at --url)
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
    /// Operate the Feed service.
    Feed {
        #[command(subcommand)]
        command: FeedCommand,
    },
}

#[derive(Debug, Subcommand)]
enum FeedCommand {
    /// Rebuild every read model of a tenant from the durable archive of feed events, then
    /// catch each up with its channel (for read models that were flushed, lost or damaged).
    Rebuild {
        /// The tenant; the token must be an access token of it with the `admin` scope.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Where meshd is and who calls it.
#[derive(Debug, clap::Args)]
struct Target {
    /// meshd's address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    url: String,
    /// The bearer access token (`meshd dev-token --scope admin ...` prints one for the
    /// embedded default).
    #[arg(long, env = "MESH_TOKEN", hide_env_values = true)]
    token: String,
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
        Command::Feed { command: FeedCommand::Rebuild { tenant, target } } => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(rebuild_feeds(&tenant, &target))
        }
    }
}

async fn rebuild_feeds(tenant: &str, target: &Target) -> anyhow::Result<()> {
    use mesh_proto::mesh::feed::v1::RebuildFeedsRequest;
    use mesh_proto::mesh::feed::v1::feed_service_client::FeedServiceClient;

    let channel = tonic::transport::Endpoint::from_shared(target.url.clone())
        .with_context(|| format!("--url {} is not a valid address", target.url))?
        .connect()
        .await
        .with_context(|| format!("cannot reach meshd at {}", target.url))?;
    let mut request = tonic::Request::new(RebuildFeedsRequest { tenant_id: tenant.to_owned() });
    let bearer = tonic::metadata::MetadataValue::try_from(format!("Bearer {}", target.token))
        .context("the token holds characters a header cannot carry")?;
    request.metadata_mut().insert("authorization", bearer);
    let response = FeedServiceClient::new(channel)
        .rebuild_feeds(request)
        .await
        .map_err(|status| anyhow::anyhow!("RebuildFeeds failed: {:?}: {}", status.code(), status.message()))?
        .into_inner();
    println!("rebuilt {} feeds of tenant {tenant}: {} activities", response.feeds, response.entries);
    Ok(())
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
