//! PostgresCdcSource against a PostgreSQL server the benchmark starts with `wal_level=logical`
//! (the shared one has `replica`), beside the raw replication stream read by the same library:
//! - `cdc_postgres`: rows inserted in transactions of 10,000, then PostgresCdcSource streams
//!   them from its slot (`snapshot.mode=never`) → worker → JsonConverter → Kafka, until the
//!   last row's offset is committed; baseline: a second slot on the same WAL read with
//!   pgwire-replication, every pgoutput message decoded, until the last insert.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use pgwire_replication::{ReplicationClient, ReplicationConfig, ReplicationEvent};
use sluice_connector_postgres_cdc::pgoutput::{self, Message};
use sluice_data::converter::Side;
use sluice_proto::connector::v1::ConnectorType;
use sluice_worker::task::offsets::OffsetStore;

use crate::databases::{json_converter, run_until};
use crate::{spec_with, worker_context, Figure};

/// Rows per transaction.
const TX_ROWS: u64 = 10_000;
pub const TOPIC: &str = "bench.public.bench_cdc";

/// A PostgreSQL server program, as the `postgres` user when running as root (PostgreSQL
/// refuses to run as root).
fn server_command(program: &str) -> anyhow::Result<Command> {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL's server programs (/usr/lib/postgresql/*/bin)")?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .max()
        .context("no /usr/lib/postgresql/*/bin/initdb")?;
    let path = bin.join(program);
    Ok(if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new(runuser());
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    })
}

fn run(mut command: Command, what: &str) -> anyhow::Result<()> {
    let out = command.output().with_context(|| format!("run {what}"))?;
    if !out.status.success() {
        bail!("{what}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The benchmark's own server, stopped when dropped.
struct Server {
    _dir: tempfile::TempDir,
    data: PathBuf,
    port: u16,
}

impl Server {
    fn start() -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().to_str().context("temp path")?.to_string();
        if unsafe { libc::geteuid() } == 0 {
            let mut chown = Command::new("chown");
            chown.args(["postgres:postgres", &path]);
            run(chown, "chown")?;
        }
        let data = dir.path().join("data");
        let mut initdb = server_command("initdb")?;
        initdb.args([
            "-D",
            &format!("{path}/data"),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]);
        run(initdb, "initdb")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut start = server_command("pg_ctl")?;
        start.args([
            "-D",
            &format!("{path}/data"),
            "-l",
            &format!("{path}/log"),
            "-o",
            &format!("-p {port} -k {path} -c listen_addresses=127.0.0.1 -c wal_level=logical -c fsync=off"),
            "-w",
            "start",
        ]);
        run(start, "pg_ctl start")?;
        Ok(Server {
            _dir: dir,
            data,
            port,
        })
    }

    fn stop(data: &Path) {
        if let Ok(mut c) = server_command("pg_ctl") {
            let _ = c
                .args(["-D", &data.to_string_lossy(), "-m", "immediate", "stop"])
                .output();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        Server::stop(&self.data);
    }
}

pub async fn figure(bootstrap: &str, rows: u64) -> anyhow::Result<Figure> {
    let server = Server::start()?;
    let (pg, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(server.port)
        .user("postgres")
        .dbname("postgres")
        .connect(tokio_postgres::NoTls)
        .await
        .context("connect to the benchmark's PostgreSQL")?;
    tokio::spawn(connection);
    // One statement at a time: a slot cannot be made in a transaction that wrote.
    for statement in [
        "CREATE TABLE bench_cdc (id BIGINT PRIMARY KEY, name TEXT NOT NULL, amount NUMERIC(12,2),
           flag BOOLEAN, updated TIMESTAMP(3) NOT NULL DEFAULT now())",
        "CREATE PUBLICATION dbz_publication FOR ALL TABLES",
        "SELECT pg_create_logical_replication_slot('raw', 'pgoutput')",
        "SELECT pg_create_logical_replication_slot('sluice', 'pgoutput')",
    ] {
        pg.batch_execute(statement).await.map_err(|e| {
            anyhow::anyhow!(
                "{statement}: {}",
                e.as_db_error()
                    .map_or(e.to_string(), |d| d.message().to_string())
            )
        })?;
    }
    let mut from = 1;
    while from <= rows {
        let to = (from + TX_ROWS - 1).min(rows);
        pg.batch_execute(&format!(
            "INSERT INTO bench_cdc (id, name, amount, flag)
               SELECT g, 'customer ' || g, g * 1.25, g % 2 = 0 FROM generate_series({from}, {to}) g"
        ))
        .await?;
        from = to + 1;
    }

    // The baseline: the raw stream of the other slot, every message decoded.
    let started = Instant::now();
    let config = ReplicationConfig::new(
        "127.0.0.1",
        "postgres",
        "",
        "postgres",
        "raw",
        "dbz_publication",
    )
    .with_port(server.port);
    let mut client = ReplicationClient::connect(config).await?;
    let (mut inserts, mut last_commit, mut in_tx) = (0u64, 0u64, 0u64);
    while inserts < rows || in_tx > 0 {
        match client.recv().await? {
            Some(ReplicationEvent::XLogData { data, .. }) => {
                if let Message::Insert { new, .. } =
                    pgoutput::decode(&data).map_err(anyhow::Error::msg)?
                {
                    std::hint::black_box(new);
                    inserts += 1;
                    in_tx += 1;
                }
            }
            Some(ReplicationEvent::Begin { final_lsn, .. }) => last_commit = final_lsn.as_u64(),
            Some(ReplicationEvent::Commit { .. }) => in_tx = 0,
            Some(_) => {}
            None => bail!("the replication stream ended after {inserts} inserts"),
        }
    }
    let baseline = started.elapsed().as_secs_f64();
    client.stop();

    let name = "bench-cdc";
    let mut spec = spec_with(
        name,
        ConnectorType::Source,
        "PostgresCdcSource",
        &[
            ("database.hostname", "127.0.0.1".into()),
            ("database.port", server.port.to_string()),
            ("database.user", "postgres".into()),
            ("database.dbname", "postgres".into()),
            ("topic.prefix", "bench".into()),
            ("slot.name", "sluice".into()),
            ("publication.autocreate.mode", "disabled".into()),
            ("snapshot.mode", "never".into()),
        ],
        "--postgres-cdc-connector",
    )?;
    spec.conversion.key = json_converter(Side::Key);
    spec.conversion.value = json_converter(Side::Value);
    let offsets = Arc::new(OffsetStore::open(None)?);
    let ctx = worker_context(bootstrap, offsets.clone());
    let last_rows = rows - (rows - 1) / TX_ROWS * TX_ROWS;
    let secs = run_until(spec, ctx, || {
        let finished = offsets.local_positions(name).iter().any(|p| {
            serde_json::from_str::<serde_json::Value>(&p.offset).is_ok_and(|o| {
                o["lsn_commit"].as_u64() == Some(last_commit)
                    && o["event"].as_u64() == Some(last_rows)
            })
        });
        async move { Ok(finished) }
    })
    .await?;
    Ok(Figure {
        name: "cdc_postgres".into(),
        records: rows,
        size: 0,
        secs,
        baseline_secs: baseline,
    })
}

/// `runuser`, which lives in an sbin folder that a minimal PATH (CI's `env -i`) leaves out.
fn runuser() -> &'static str {
    ["/usr/sbin/runuser", "/sbin/runuser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("runuser")
}
