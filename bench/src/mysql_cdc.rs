//! MySqlCdcSource against a MariaDB server the benchmark starts with a row-based binlog (the
//! shared one has none), beside the raw binlog stream read by the same library:
//! - `cdc_mariadb`: rows inserted in transactions of 10,000, then MySqlCdcSource reads them
//!   from the binlog (from the position before the first insert) → worker → JsonConverter →
//!   Kafka, until the last row's offset is committed; baseline: mysql_async's binlog stream
//!   from the same position, every row of every rows event decoded, until the last insert.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures::StreamExt;
use mysql_async::binlog::events::EventData;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn, OptsBuilder, Row};
use sluice_data::converter::Side;
use sluice_proto::connector::v1::ConnectorType;
use sluice_worker::task::offsets::OffsetStore;

use crate::databases::{json_converter, run_until};
use crate::{spec_with, worker_context, Figure};

/// Rows per transaction.
const TX_ROWS: u64 = 10_000;
pub const TOPIC: &str = "bench.bench.bench_cdc";

/// The benchmark's own MariaDB, killed when dropped.
struct Server {
    child: Child,
    _dir: tempfile::TempDir,
    port: u16,
}

fn program(name: &str) -> anyhow::Result<std::path::PathBuf> {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.exists())
        .with_context(|| format!("no {name} in /usr/sbin or /usr/bin"))
}

impl Server {
    fn start() -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        let root = unsafe { libc::geteuid() } == 0;
        let path = dir.path().to_str().context("temp path")?.to_string();
        if root {
            Command::new("chown")
                .args(["mysql:mysql", &path])
                .status()?;
            Command::new("chmod").args(["755", &path]).status()?;
        }
        let mut install = Command::new(program("mariadb-install-db")?);
        install.args([
            "--no-defaults",
            &format!("--datadir={path}/data"),
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]);
        if root {
            install.arg("--user=mysql");
        }
        let out = install.stdin(Stdio::null()).output()?;
        if !out.status.success() {
            bail!(
                "mariadb-install-db: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut server = Command::new(program("mariadbd")?);
        server.args([
            "--no-defaults",
            &format!("--datadir={path}/data"),
            &format!("--port={port}"),
            &format!("--socket={path}/sock"),
            &format!("--pid-file={path}/pid"),
            &format!("--log-error={path}/error.log"),
            "--bind-address=127.0.0.1",
            "--server-id=1",
            "--log-bin=binlog",
            "--binlog-format=ROW",
            "--innodb-flush-log-at-trx-commit=2",
            "--sync-binlog=0",
        ]);
        if root {
            server.arg("--user=mysql");
        }
        let child = server
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let server = Server {
            child,
            _dir: dir,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("MariaDB did not start on port {port}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }

    async fn connect(&self) -> anyhow::Result<Conn> {
        let opts = OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.port)
            .user(Some("root"))
            .prefer_socket(false);
        Ok(Conn::new(opts).await?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn figure(bootstrap: &str, rows: u64) -> anyhow::Result<Figure> {
    let server = Server::start()?;
    let mut conn = server.connect().await?;
    conn.query_drop(
        "CREATE DATABASE bench;
         CREATE TABLE bench.bench_cdc (id BIGINT PRIMARY KEY, name VARCHAR(40) NOT NULL,
           amount DECIMAL(12,2), flag BOOLEAN, updated DATETIME(3) NOT NULL DEFAULT NOW(3))",
    )
    .await?;
    let status: Vec<Row> = conn.query("SHOW MASTER STATUS").await?;
    let mut first = status.into_iter().next().context("SHOW MASTER STATUS")?;
    let (file, pos): (String, u64) = (
        first.take(0).context("binlog file")?,
        first.take(1).context("binlog position")?,
    );
    let mut from = 1;
    while from <= rows {
        let to = (from + TX_ROWS - 1).min(rows);
        conn.query_drop(format!(
            "INSERT INTO bench.bench_cdc (id, name, amount, flag)
               SELECT seq, CONCAT('customer ', seq), seq * 1.25, seq % 2 = 0 FROM bench.seq_{from}_to_{to}"
        ))
        .await?;
        from = to + 1;
    }
    drop(conn);

    // The baseline: the binlog from the same position, every row decoded.
    let started = Instant::now();
    let conn = server.connect().await?;
    let mut stream = conn
        .get_binlog_stream(
            BinlogStreamRequest::new(77)
                .with_filename(file.as_bytes())
                .with_pos(pos),
        )
        .await?;
    let mut inserted = 0u64;
    while inserted < rows {
        let Some(event) = stream.next().await else {
            bail!("the binlog stream ended after {inserted} rows");
        };
        let event = event?;
        if let Some(EventData::RowsEvent(data)) = event.read_data()? {
            let tme = stream
                .get_tme(data.table_id())
                .context("a rows event without its table map")?;
            for row in data.rows(tme) {
                std::hint::black_box(row?);
                inserted += 1;
            }
        }
    }
    let baseline = started.elapsed().as_secs_f64();
    drop(stream);

    let name = "bench-mysql-cdc";
    let mut spec = spec_with(
        name,
        ConnectorType::Source,
        "MySqlCdcSource",
        &[
            ("database.hostname", "127.0.0.1".into()),
            ("database.port", server.port.to_string()),
            ("database.user", "root".into()),
            ("database.server.id", "78".into()),
            ("topic.prefix", "bench".into()),
            ("table.include.list", "bench\\.bench_cdc".into()),
            ("snapshot.mode", "never".into()),
        ],
        "--mysql-cdc-connector",
    )?;
    spec.conversion.key = json_converter(Side::Key);
    spec.conversion.value = json_converter(Side::Value);
    let offsets = Arc::new(OffsetStore::open(None)?);
    // Where the binlog stood before the inserts, as a stored offset.
    let partition = serde_json::json!({ "server": "bench" }).to_string();
    let start = serde_json::json!({ "file": file, "pos": pos, "event": 0 }).to_string();
    offsets.commit(name, [(partition.as_str(), start.as_str())]);
    let ctx = worker_context(bootstrap, offsets.clone());
    let last_rows = rows - (rows - 1) / TX_ROWS * TX_ROWS;
    let secs = run_until(spec, ctx, || {
        let finished = offsets.local_positions(name).iter().any(|p| {
            serde_json::from_str::<serde_json::Value>(&p.offset)
                .is_ok_and(|o| o["event"].as_u64() == Some(last_rows) && o["pos"] != pos)
        });
        async move { Ok(finished) }
    })
    .await?;
    Ok(Figure {
        name: "cdc_mariadb".into(),
        records: rows,
        size: 0,
        secs,
        baseline_secs: baseline,
    })
}
