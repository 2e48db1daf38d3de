//! The databases the connector tests use: PostgreSQL and MariaDB running on this machine (or
//! where `SLUICE_TEST_POSTGRES_URL` / `SLUICE_TEST_MARIADB_URL` point, as JDBC URLs). A
//! database that cannot be reached fails the test, naming the variable: it is never skipped.

use std::time::Duration;

pub const POSTGRES_ENV: &str = "SLUICE_TEST_POSTGRES_URL";
pub const POSTGRES_DEFAULT: &str = "jdbc:postgresql://127.0.0.1:5432/test?user=postgres";
pub const MARIADB_ENV: &str = "SLUICE_TEST_MARIADB_URL";
pub const MARIADB_DEFAULT: &str = "jdbc:mariadb://127.0.0.1:3306/test?user=root";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    MariaDb,
}

/// A blocking client for test set-up and checks: statements, and rows as text.
pub struct Db {
    pub kind: Kind,
    /// The JDBC URL connectors are given.
    pub url: String,
    runtime: tokio::runtime::Runtime,
    pg: Option<tokio_postgres::Client>,
    my: Option<std::cell::RefCell<mysql_async::Conn>>,
}

struct Parts {
    host: String,
    port: u16,
    database: String,
    user: Option<String>,
    password: Option<String>,
}

fn parts(url: &str) -> Parts {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (address, rest) = rest.split_once('/').unwrap_or((rest, ""));
    let (database, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (host, port) = address.split_once(':').unwrap_or((address, ""));
    let property = |k: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(&format!("{k}=")).map(str::to_string))
    };
    Parts {
        host: host.to_string(),
        port: port.parse().unwrap_or(0),
        database: database.to_string(),
        user: property("user"),
        password: property("password"),
    }
}

impl Db {
    pub fn postgres() -> Db {
        Db::connect(Kind::Postgres)
    }

    pub fn mariadb() -> Db {
        Db::connect(Kind::MariaDb)
    }

    pub fn connect(kind: Kind) -> Db {
        let (env, default) = match kind {
            Kind::Postgres => (POSTGRES_ENV, POSTGRES_DEFAULT),
            Kind::MariaDb => (MARIADB_ENV, MARIADB_DEFAULT),
        };
        let url = std::env::var(env).unwrap_or_else(|_| default.to_string());
        Db::at(kind, &url)
    }

    /// A client of the database at `url` (a JDBC URL).
    pub fn at(kind: Kind, url: &str) -> Db {
        let (env, default, name) = match kind {
            Kind::Postgres => (POSTGRES_ENV, POSTGRES_DEFAULT, "PostgreSQL"),
            Kind::MariaDb => (MARIADB_ENV, MARIADB_DEFAULT, "MariaDB"),
        };
        let url = url.to_string();
        let p = parts(&url);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let unreachable = |e: String| -> ! {
            panic!(
                "{name} is not reachable at {}:{} ({e}); these tests need it: start it or point {env} at one (default {default})",
                p.host, p.port
            )
        };
        let mut db = Db {
            kind,
            url: url.clone(),
            runtime,
            pg: None,
            my: None,
        };
        match kind {
            Kind::Postgres => {
                let mut config = tokio_postgres::Config::new();
                config
                    .host(&p.host)
                    .port(if p.port == 0 { 5432 } else { p.port })
                    .dbname(&p.database)
                    .user(p.user.as_deref().unwrap_or("postgres"))
                    .connect_timeout(Duration::from_secs(10));
                if let Some(pw) = &p.password {
                    config.password(pw);
                }
                let (client, connection) = db
                    .runtime
                    .block_on(config.connect(tokio_postgres::NoTls))
                    .unwrap_or_else(|e| unreachable(e.to_string()));
                db.runtime.spawn(connection);
                db.pg = Some(client);
            }
            Kind::MariaDb => {
                let opts = mysql_async::OptsBuilder::default()
                    .ip_or_hostname(p.host.clone())
                    .tcp_port(if p.port == 0 { 3306 } else { p.port })
                    .db_name(Some(p.database.clone()))
                    .user(p.user.clone())
                    .pass(p.password.clone())
                    .prefer_socket(false)
                    .init(vec!["SET time_zone = '+00:00'"]);
                let conn = db
                    .runtime
                    .block_on(mysql_async::Conn::new(opts))
                    .unwrap_or_else(|e| unreachable(e.to_string()));
                db.my = Some(std::cell::RefCell::new(conn));
            }
        }
        db
    }

    /// Runs statements (several, separated by `;`).
    pub fn exec(&self, sql: &str) {
        use mysql_async::prelude::Queryable;
        match (&self.pg, &self.my) {
            (Some(pg), _) => self
                .runtime
                .block_on(pg.batch_execute(sql))
                .unwrap_or_else(|e| panic!("{sql}: {e:?}")),
            (_, Some(my)) => {
                let mut conn = my.borrow_mut();
                for statement in sql.split(";\n").filter(|s| !s.trim().is_empty()) {
                    self.runtime
                        .block_on(conn.query_drop(statement))
                        .unwrap_or_else(|e| panic!("{statement}: {e}"));
                }
            }
            _ => unreachable!(),
        }
    }

    /// Rows as text (NULL as None).
    pub fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        use mysql_async::prelude::Queryable;
        match (&self.pg, &self.my) {
            (Some(pg), _) => self
                .runtime
                .block_on(pg.simple_query(sql))
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_string))
                            .collect(),
                    ),
                    _ => None,
                })
                .collect(),
            (_, Some(my)) => {
                let mut conn = my.borrow_mut();
                let rows: Vec<mysql_async::Row> = self
                    .runtime
                    .block_on(conn.query(sql))
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                rows.into_iter()
                    .map(|row| {
                        row.unwrap()
                            .into_iter()
                            .map(|v| match v {
                                mysql_async::Value::NULL => None,
                                mysql_async::Value::Bytes(b) => {
                                    Some(String::from_utf8_lossy(&b).into_owned())
                                }
                                other => Some(other.as_sql(true)),
                            })
                            .collect()
                    })
                    .collect()
            }
            _ => unreachable!(),
        }
    }

    /// One number from a query such as `SELECT count(*) …`.
    pub fn count(&self, sql: &str) -> i64 {
        self.rows(sql)
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{sql} gave no number"))
    }

    /// An identifier quoted for this database.
    pub fn quote(&self, ident: &str) -> String {
        match self.kind {
            Kind::Postgres => format!("\"{ident}\""),
            Kind::MariaDb => format!("`{ident}`"),
        }
    }
}

/// A table name unique to this test process and `what`, so tests run in parallel on one server.
pub fn table(what: &str) -> String {
    format!("t{}_{what}", std::process::id())
}

/// Where the PostgreSQL server programs are (`initdb`, `pg_ctl`): `SLUICE_TEST_PG_BIN`, or the
/// newest `/usr/lib/postgresql/*/bin`.
fn pg_bin() -> std::path::PathBuf {
    if let Ok(dir) = std::env::var("SLUICE_TEST_PG_BIN") {
        return dir.into();
    }
    let mut found: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    found.retain(|p| p.join("initdb").exists());
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("no PostgreSQL server programs in /usr/lib/postgresql/*/bin: install them (postgresql) or set SLUICE_TEST_PG_BIN")
    })
}

/// A PostgreSQL server program; as root, run as the `postgres` user, since PostgreSQL refuses
/// to run as root.
fn pg_command(program: &str) -> std::process::Command {
    let path = pg_bin().join(program);
    let mut command = if unsafe { libc::geteuid() } == 0 {
        let mut c = std::process::Command::new(runuser());
        c.args(["-u", "postgres", "--"]).arg(&path);
        c
    } else {
        std::process::Command::new(&path)
    };
    command.stdin(std::process::Stdio::null());
    command
}

/// A PostgreSQL server of the test's own, on a free port, with `wal_level=logical` (the
/// shared one has `replica`), for change data capture; its database `test` is made. Stopped
/// (immediately) when dropped.
pub struct OwnPostgres {
    pub port: u16,
    dir: tempfile::TempDir,
    data: std::path::PathBuf,
}

impl OwnPostgres {
    pub fn start() -> OwnPostgres {
        OwnPostgres::start_with_wal_level("logical")
    }

    /// [`OwnPostgres::start`] with another `wal_level` (`replica`: a server without logical
    /// decoding).
    pub fn start_with_wal_level(wal_level: &str) -> OwnPostgres {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        if unsafe { libc::geteuid() } == 0 {
            // The postgres user must own its directory.
            for (program, arg) in [("chmod", "755"), ("chown", "postgres:postgres")] {
                let ok = std::process::Command::new(program)
                    .args([arg, dir.path().to_str().unwrap()])
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "{program} {arg} {}", dir.path().display());
            }
        }
        let out = pg_command("initdb")
            .args([
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let log = dir.path().join("log");
        let mut last = String::new();
        for _ in 0..5 {
            let port = super::free_port();
            let options = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c wal_level={wal_level} -c max_wal_senders=10 -c max_replication_slots=10 -c fsync=off",
                dir.path().display()
            );
            let out = pg_command("pg_ctl")
                .args(["-D", data.to_str().unwrap(), "-o", &options])
                .args(["-l", log.to_str().unwrap(), "-w", "start"])
                .output()
                .expect("run pg_ctl");
            if out.status.success() {
                let server = OwnPostgres { port, dir, data };
                server.database("postgres").exec("CREATE DATABASE test");
                return server;
            }
            last = std::fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("PostgreSQL did not start: {last}");
    }

    /// The JDBC URL of database `test`.
    pub fn url(&self) -> String {
        format!(
            "jdbc:postgresql://127.0.0.1:{}/test?user=postgres",
            self.port
        )
    }

    /// A client of database `test`.
    pub fn db(&self) -> Db {
        self.database("test")
    }

    fn database(&self, name: &str) -> Db {
        Db::at(
            Kind::Postgres,
            &format!(
                "jdbc:postgresql://127.0.0.1:{}/{name}?user=postgres",
                self.port
            ),
        )
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = pg_command("pg_ctl")
            .args(["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"])
            .output();
    }
}

/// `runuser`, which lives in an sbin folder that a minimal PATH (CI's `env -i`) leaves out.
fn runuser() -> &'static str {
    ["/usr/sbin/runuser", "/sbin/runuser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("runuser")
}

/// A MariaDB server of the test's own, on a free port, with the row-based binlog on (the
/// shared one has none), for change data capture; its database `test` is made. Killed when
/// dropped.
pub struct OwnMariaDb {
    pub port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

/// A MariaDB program, looked up where Debian puts it (a minimal PATH leaves sbin out).
fn mariadb_program(name: &str) -> std::path::PathBuf {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no {name} in /usr/sbin or /usr/bin: install mariadb-server"))
}

impl OwnMariaDb {
    pub fn start() -> OwnMariaDb {
        OwnMariaDb::start_with(&["--log-bin=binlog", "--binlog-format=ROW"])
    }

    /// [`OwnMariaDb::start`] with other server options (none: a server without a binlog).
    pub fn start_with(options: &[&str]) -> OwnMariaDb {
        let dir = tempfile::tempdir().expect("temp dir");
        // Its own temporary directory: servers bootstrapping side by side never meet in /tmp.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).expect("server tmp dir");
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            for (program, arg) in [("chmod", "755"), ("chown", "mysql:mysql")] {
                let ok = std::process::Command::new(program)
                    .args(["-R", arg, dir.path().to_str().unwrap()])
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "{program} {arg} {}", dir.path().display());
            }
        }
        let data = dir.path().join("data");
        let mut install = std::process::Command::new(mariadb_program("mariadb-install-db"));
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ])
            .env("TMPDIR", &tmp)
            .stdin(std::process::Stdio::null());
        if root {
            install.arg("--user=mysql");
        }
        let out = install.output().expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let log = dir.path().join("error.log");
        let mut last = String::new();
        for _ in 0..5 {
            let port = super::free_port();
            let mut server = std::process::Command::new(mariadb_program("mariadbd"));
            server
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--port={port}"))
                .arg(format!("--socket={}", dir.path().join("sock").display()))
                .arg(format!("--pid-file={}", dir.path().join("pid").display()))
                .arg(format!("--log-error={}", log.display()))
                .arg(format!("--tmpdir={}", tmp.display()))
                .args([
                    "--bind-address=127.0.0.1",
                    "--server-id=1",
                    "--skip-name-resolve",
                    "--innodb-buffer-pool-size=32M",
                    "--innodb-flush-log-at-trx-commit=2",
                    "--sync-binlog=0",
                ])
                .args(options)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            if root {
                server.arg("--user=mysql");
            }
            let mut child = server.spawn().expect("run mariadbd");
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    let server = OwnMariaDb {
                        port,
                        child,
                        _dir: dir,
                    };
                    Db::at(
                        Kind::MariaDb,
                        &format!("jdbc:mariadb://127.0.0.1:{port}/mysql?user=root"),
                    )
                    .exec("CREATE DATABASE test");
                    return server;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            last = std::fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("MariaDB did not start: {last}");
    }

    /// The JDBC URL of database `test`.
    pub fn url(&self) -> String {
        format!("jdbc:mariadb://127.0.0.1:{}/test?user=root", self.port)
    }

    /// A client of database `test`.
    pub fn db(&self) -> Db {
        Db::at(Kind::MariaDb, &self.url())
    }
}

impl Drop for OwnMariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
