//! `sluice connectors|plugins|cluster ...`: the public gRPC API from the command line. Human
//! tables by default, `-o json` for scripts (proto3 JSON, as grpcurl prints it); an error is
//! one line on stderr and the exit code says which kind (see [`exit_code`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::anyhow;
use clap::{Args, ValueEnum};
use sluice_proto::api::v1 as api;
use sluice_worker::link::{Link, LinkSecurity};

mod apply;
mod cluster;
mod connectors;
mod plugins;

pub use apply::{ApplyCommand, DiffCommand};
pub use cluster::Cluster;
pub use connectors::Connectors;
pub use plugins::Plugins;

#[derive(Args)]
pub struct Target {
    /// The controller's URL (or SLUICE_CONTROLLER).
    #[arg(
        long,
        global = true,
        env = "SLUICE_CONTROLLER",
        default_value = "http://127.0.0.1:9083"
    )]
    pub(crate) controller: String,
    /// PEM file of the CA that signed the controller's certificate (for an https:// URL).
    #[arg(long, global = true, env = "SLUICE_TLS_CA")]
    pub(crate) tls_ca: Option<std::path::PathBuf>,
    /// PEM files of a client certificate and its key, for a controller that asks for one.
    #[arg(long, global = true, requires = "tls_key")]
    pub(crate) tls_cert: Option<std::path::PathBuf>,
    #[arg(long, global = true, requires = "tls_cert")]
    pub(crate) tls_key: Option<std::path::PathBuf>,
    /// File holding the bearer token the controller gave you (without it, SLUICE_TOKEN).
    #[arg(long, global = true)]
    pub(crate) token_file: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub(crate) output: Format,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Table,
    Json,
}

/// gRPC code → exit code: 2 invalid argument, 3 not found, 4 already exists, 5 failed
/// precondition, 6 unavailable, 1 anything else.
fn exit_code(status: &tonic::Status) -> u8 {
    use tonic::Code;
    match status.code() {
        Code::InvalidArgument => 2,
        Code::NotFound => 3,
        Code::AlreadyExists => 4,
        Code::FailedPrecondition => 5,
        Code::Unavailable | Code::DeadlineExceeded => 6,
        _ => 1,
    }
}

/// Runs a client command and reports its failure in one line.
pub(crate) async fn main(target: Target, command: impl AsyncCommand) -> ExitCode {
    match command.run(&target).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(status) = e.downcast_ref::<tonic::Status>() {
                let code = format!("{:?}", status.code());
                eprintln!("error: {}: {}", upper_snake(&code), status.message());
                return ExitCode::from(exit_code(status));
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn upper_snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

pub(crate) trait AsyncCommand {
    async fn run(self, target: &Target) -> anyhow::Result<()>;
}

pub(crate) async fn channel(target: &Target) -> anyhow::Result<Link> {
    let security = LinkSecurity {
        ca: target.tls_ca.clone(),
        cert: target.tls_cert.clone(),
        key: target.tls_key.clone(),
        token: LinkSecurity::read_token(target.token_file.as_deref())?,
    };
    security
        .connect(&target.controller, std::time::Duration::from_secs(5))
        .await
}

/// Prints `message` (of proto type `full_name`) as proto3 JSON.
pub(crate) fn print_json<M: prost::Message>(full_name: &str, message: &M) -> anyhow::Result<()> {
    let value = sluice_worker::proto_json::to_json(message, full_name, true)?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

/// Left-aligned columns.
pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

pub(crate) fn state_name(state: i32) -> String {
    api::State::try_from(state)
        .map(|s| s.as_str_name().trim_start_matches("STATE_").to_string())
        .unwrap_or_else(|_| "UNKNOWN".into())
}

pub(crate) fn type_name(kind: i32) -> String {
    api::ConnectorType::try_from(kind)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("CONNECTOR_TYPE_")
                .to_lowercase()
        })
        .unwrap_or_default()
}

/// Reads a connector file: JSON in the REST API's shape or flat, or .properties.
pub(crate) fn connector_file(path: &Path) -> anyhow::Result<(String, BTreeMap<String, String>)> {
    let file = sluice_model::ConfigFile::load(path)?;
    let mut values = file.into_values();
    let name = values
        .get("name")
        .cloned()
        .ok_or_else(|| anyhow!("{}: name: missing", path.display()))?;
    values.remove("name");
    Ok((name, values))
}
