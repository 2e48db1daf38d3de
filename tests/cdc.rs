//! PostgresCdcSource (Debezium's PostgreSQL connector) against PostgreSQL servers these tests
//! start with `wal_level=logical`, through `sluice standalone` and a `sluice dev-kafka` broker:
//! the snapshot and the stream in Debezium's envelope (every common type), a 100,000-row
//! snapshot with writes running beside it (no gap, no double), SIGKILL of the connector and of
//! the worker while rows stream in (nothing lost, the slot's confirmed position advancing), a
//! PostgreSQL → CDC → Kafka → JdbcSink → MariaDB pipeline, the conformance kit, and the error
//! a server without logical decoding gives.

mod harness;

use std::collections::BTreeMap;
use std::time::Duration;

use harness::db::{table, Db, OwnMariaDb, OwnPostgres};
use harness::*;
use serde_json::Value as Json;

const TIMEOUT: Duration = Duration::from_secs(90);

/// The CDC connector's keys for `server`, capturing the tables `include` matches.
fn cdc(
    server: &OwnPostgres,
    prefix: &str,
    include: &str,
    extra: &[(&str, &str)],
) -> Vec<(&'static str, String)> {
    let mut pairs: Vec<(&'static str, String)> = vec![
        (
            "connector.class",
            "io.debezium.connector.postgresql.PostgresConnector".into(),
        ),
        ("database.hostname", "127.0.0.1".into()),
        ("database.port", server.port.to_string()),
        ("database.user", "postgres".into()),
        ("database.password", "never-shown-secret".into()),
        ("database.dbname", "test".into()),
        ("topic.prefix", prefix.into()),
        ("plugin.name", "pgoutput".into()),
        ("table.include.list", include.into()),
    ];
    for (k, v) in extra {
        pairs.push((Box::leak(k.to_string().into_boxed_str()), v.to_string()));
    }
    pairs
}

/// Every record of `topic`: key and value as JSON (None for null), partition by partition
/// (each in order).
fn records(bootstrap: &str, topic: &str) -> Vec<(Option<Json>, Option<Json>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::message::Message as _;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "cdc-reader")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let partitions = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map(|m| m.topics()[0].partitions().len())
        .unwrap_or(1)
        .max(1);
    let mut out = Vec::new();
    for partition in 0..partitions as i32 {
        let mut list = rdkafka::TopicPartitionList::new();
        list.add_partition_offset(topic, partition, rdkafka::Offset::Beginning)
            .unwrap();
        consumer.assign(&list).unwrap();
        let deadline = std::time::Instant::now() + TIMEOUT;
        while std::time::Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let json =
                        |b: Option<&[u8]>| b.map(|b| serde_json::from_slice(b).expect("JSON"));
                    out.push((json(m.key()), json(m.payload())));
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                Some(Err(rdkafka::error::KafkaError::MessageConsumption(_))) | None => {}
                Some(Err(e)) => panic!("read {topic}: {e}"),
            }
        }
    }
    out
}

fn count(bootstrap: &str, topic: &str) -> i64 {
    harness::cluster::total_records(bootstrap, topic)
}

fn wait_count(kafka: &DevKafka, topic: &str, at_least: i64) {
    wait_for(&format!("{at_least} records in {topic}"), TIMEOUT, || {
        count(&kafka.bootstrap, topic) >= at_least
    });
}

/// The slot's confirmed position, as a number.
fn confirmed_lsn(db: &Db, slot: &str) -> u64 {
    let rows = db.rows(&format!(
        "SELECT (confirmed_flush_lsn - '0/0')::text FROM pg_replication_slots WHERE slot_name = '{slot}'"
    ));
    rows.first()
        .and_then(|r| r[0].as_deref())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The payload `after` (or `before`) of change events, with `op`.
fn ops(records: &[(Option<Json>, Option<Json>)]) -> Vec<String> {
    records
        .iter()
        .map(|(_, v)| match v {
            None => "tombstone".to_string(),
            Some(v) => v["payload"]["op"].as_str().unwrap_or("?").to_string(),
        })
        .collect()
}

/// Snapshot, then insert, update, delete and truncate of a table with every common type: the
/// events in Debezium's envelope (field order, names, logical types, key, source), a
/// tombstone after the delete, and the slot's confirmed position advancing once the worker
/// committed.
#[test]
fn postgres_cdc_snapshots_then_streams_every_type_in_debeziums_envelope() {
    let server = OwnPostgres::start();
    let db = server.db();
    let t = table("types");
    db.exec(&format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, small SMALLINT, big BIGINT NOT NULL, real4 REAL,
           dbl DOUBLE PRECISION, num NUMERIC(10,2), anynum NUMERIC, flag BOOLEAN, name VARCHAR(20),
           body TEXT, fixed CHAR(3), raw BYTEA, day DATE, at TIME, at_ms TIME(3), ts TIMESTAMP,
           ts_ms TIMESTAMP(3), tstz TIMESTAMPTZ, ttz TIMETZ, span INTERVAL, doc JSONB, js JSON, uid UUID,
           x XML, tags TEXT[]);
         INSERT INTO {t} VALUES
           (1, -2, 9000000000, 1.5, -2.25, 12345678.91, 3.14159, true, 'café', 'long text', 'ab',
            '\\x00ff10', '2024-02-29', '13:45:01.123456', '01:02:03.5', '2024-02-29 13:45:01.123456',
            '1969-12-31 23:59:59.999', '2024-02-29 13:45:01.5+02', '10:15:30-05:30', '1 day 2 hours 0.5 seconds',
            '{{\"b\": [1, 2], \"a\": null}}', '{{\"z\":1}}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '<a>x</a>',
            '{{x,y}}'),
           (2, NULL, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);"
    ));
    let dir = tempfile::tempdir().unwrap();
    let topic = format!("srv.public.{t}");
    let kafka = DevKafka::start(dir.path(), &[&format!("{topic}:1")]);
    let file = connector_file(
        dir.path(),
        "cdc",
        &cdc(
            &server,
            "srv",
            &format!("public\\.{t}"),
            &[("skipped.operations", "none")],
        ),
    );
    let sluice = standalone_on(dir.path(), &kafka, &[file]);
    wait_count(&kafka, &topic, 2);
    let start_lsn = confirmed_lsn(&db, "debezium");
    db.exec(&format!(
        "INSERT INTO {t} (id, big, name) VALUES (3, 7, 'new');
         UPDATE {t} SET name = 'changed', num = -0.5 WHERE id = 3;
         DELETE FROM {t} WHERE id = 2;
         TRUNCATE {t};"
    ));
    // r, r, c, u, d, tombstone, t
    wait_count(&kafka, &topic, 7);
    let all = records(&kafka.bootstrap, &topic);
    assert_eq!(
        ops(&all),
        ["r", "r", "c", "u", "d", "tombstone", "t"],
        "{}",
        sluice.output()
    );

    // The envelope's schema: Debezium's names and field order.
    let value = all[0].1.as_ref().unwrap();
    let schema = &value["schema"];
    assert_eq!(schema["name"], format!("srv.public.{t}.Envelope"));
    let names = |s: &Json| -> Vec<String> {
        s["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["field"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(schema),
        [
            "before",
            "after",
            "source",
            "transaction",
            "op",
            "ts_ms",
            "ts_us",
            "ts_ns"
        ]
    );
    let source_schema = &schema["fields"][2];
    assert_eq!(
        source_schema["name"],
        "io.debezium.connector.postgresql.Source"
    );
    assert_eq!(
        names(source_schema),
        [
            "version",
            "connector",
            "name",
            "ts_ms",
            "snapshot",
            "db",
            "sequence",
            "ts_us",
            "ts_ns",
            "schema",
            "table",
            "txId",
            "lsn",
            "xmin"
        ]
    );
    let after_schema = &schema["fields"][1];
    assert_eq!(after_schema["name"], format!("srv.public.{t}.Value"));
    let logical: BTreeMap<String, Json> = after_schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["field"].as_str().unwrap().to_string(), json_type(f)))
        .collect();
    let expect = serde_json::json!({
        "id": ["int32", null, false], "small": ["int16", null, true], "big": ["int64", null, false],
        "real4": ["float", null, true], "dbl": ["double", null, true],
        "num": ["bytes", "org.apache.kafka.connect.data.Decimal", true],
        "anynum": ["struct", "io.debezium.data.VariableScaleDecimal", true],
        "flag": ["boolean", null, true], "name": ["string", null, true], "body": ["string", null, true],
        "fixed": ["string", null, true], "raw": ["bytes", null, true],
        "day": ["int32", "io.debezium.time.Date", true], "at": ["int64", "io.debezium.time.MicroTime", true],
        "at_ms": ["int32", "io.debezium.time.Time", true],
        "ts": ["int64", "io.debezium.time.MicroTimestamp", true],
        "ts_ms": ["int64", "io.debezium.time.Timestamp", true],
        "tstz": ["string", "io.debezium.time.ZonedTimestamp", true],
        "ttz": ["string", "io.debezium.time.ZonedTime", true],
        "span": ["int64", "io.debezium.time.MicroDuration", true],
        "doc": ["string", "io.debezium.data.Json", true], "js": ["string", "io.debezium.data.Json", true],
        "uid": ["string", "io.debezium.data.Uuid", true], "x": ["string", "io.debezium.data.Xml", true],
        "tags": ["string", null, true],
    });
    assert_eq!(serde_json::to_value(&logical).unwrap(), expect);

    // The snapshot row's values.
    let after = &value["payload"]["after"];
    let expect_after = serde_json::json!({
        "id": 1, "small": -2, "big": 9000000000i64, "real4": 1.5, "dbl": -2.25,
        "num": "SZYC0w==", "anynum": {"scale": 5, "value": "BMsv"}, "flag": true, "name": "café",
        "body": "long text", "fixed": "ab ", "raw": "AP8Q", "day": 19782, "at": 49501123456i64,
        "at_ms": 3723500, "ts": 1709214301123456i64, "ts_ms": -1,
        "tstz": "2024-02-29T11:45:01.5Z", "ttz": "15:45:30Z", "span": 93600500000i64,
        "doc": "{\"a\": null, \"b\": [1, 2]}", "js": "{\"z\":1}",
        "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "x": "<a>x</a>", "tags": "{x,y}",
    });
    assert_eq!(after, &expect_after);
    let nulls = &all[1].1.as_ref().unwrap()["payload"]["after"];
    assert_eq!(nulls["id"], 2);
    assert_eq!(nulls["big"], 0);
    assert!(nulls["small"].is_null() && nulls["tstz"].is_null() && nulls["anynum"].is_null());

    // Keys: the primary key, as Debezium's Key struct.
    let key = all[0].0.as_ref().unwrap();
    assert_eq!(key["schema"]["name"], format!("srv.public.{t}.Key"));
    assert_eq!(key["payload"], serde_json::json!({"id": 1}));

    // Source blocks.
    let source = |i: usize| all[i].1.as_ref().unwrap()["payload"]["source"].clone();
    assert_eq!(source(0)["snapshot"], "first");
    assert_eq!(source(1)["snapshot"], "last");
    assert_eq!(source(0)["connector"], "postgresql");
    assert_eq!(source(0)["name"], "srv");
    assert_eq!(source(0)["db"], "test");
    assert_eq!(source(0)["schema"], "public");
    assert_eq!(source(0)["table"], t.as_str());
    assert_eq!(source(2)["snapshot"], "false");
    assert!(source(2)["txId"].as_i64().unwrap() > 0);
    assert!(source(2)["lsn"].as_i64().unwrap() as u64 > start_lsn.saturating_sub(1));
    assert!(source(2)["sequence"].as_str().unwrap().starts_with('['));
    assert!(source(2)["ts_ms"].as_i64().unwrap() > 1_700_000_000_000);

    // The stream's events.
    let payload = |i: usize| all[i].1.as_ref().unwrap()["payload"].clone();
    assert_eq!(payload(2)["after"]["name"], "new");
    assert!(payload(2)["before"].is_null());
    assert_eq!(payload(3)["after"]["name"], "changed");
    assert_eq!(
        payload(3)["after"]["num"],
        "zg==",
        "-0.50 at scale 2 is -50"
    );
    assert!(
        payload(3)["before"].is_null(),
        "REPLICA IDENTITY DEFAULT sends no old row"
    );
    assert_eq!(payload(4)["before"]["id"], 2);
    assert!(payload(4)["after"].is_null());
    assert_eq!(
        all[5].0.as_ref().unwrap()["payload"],
        serde_json::json!({"id": 2})
    );
    assert!(all[6].0.is_none(), "a truncate has no key");
    assert_eq!(payload(6)["source"]["table"], t.as_str());

    // The slot moves once the worker committed what came before.
    wait_for("the slot's confirmed position to advance", TIMEOUT, || {
        confirmed_lsn(&db, "debezium") > start_lsn
    });
    assert!(!sluice.output().contains("never-shown-secret"));
}

/// A field's (type, logical name, optional).
fn json_type(field: &Json) -> Json {
    serde_json::json!([
        field["type"],
        field.get("name").cloned().unwrap_or(Json::Null),
        field["optional"]
    ])
}

/// A snapshot of 100,000 rows while other sessions insert and update: each row arrives once,
/// as a snapshot read or as a stream event, never both and never missing; updates committed
/// after the slot's consistent point arrive as updates.
#[test]
fn postgres_cdc_snapshot_of_100k_rows_with_concurrent_writes_has_no_gap_or_double() {
    let server = OwnPostgres::start();
    let db = server.db();
    let t = table("big");
    db.exec(&format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, v TEXT NOT NULL, n INT NOT NULL DEFAULT 0);
         INSERT INTO {t} SELECT g, 'row ' || g FROM generate_series(1, 100000) g;"
    ));
    let dir = tempfile::tempdir().unwrap();
    let topic = format!("big.public.{t}");
    // The embedded broker keeps a few MB per partition: spread the rows by key.
    let kafka = DevKafka::start(dir.path(), &[&format!("{topic}:32")]);
    let file = connector_file(
        dir.path(),
        "cdc",
        &cdc(
            &server,
            "big",
            &format!("public\\.{t}"),
            &[("snapshot.fetch.size", "5000")],
        ),
    );
    let _sluice = standalone_on(dir.path(), &kafka, &[file]);
    // Writes from another session while the connector starts and snapshots.
    let writer = server.db();
    for batch in 0..20 {
        let from = 100_001 + batch * 100;
        writer.exec(&format!(
            "INSERT INTO {t} SELECT g, 'late ' || g FROM generate_series({from}, {}) g;
             UPDATE {t} SET n = n + 1 WHERE id = {};",
            from + 99,
            1 + batch * 1000
        ));
        std::thread::sleep(Duration::from_millis(50));
    }
    // 100,000 reads, 2,000 creates and the updates not in the snapshot.
    check_snapshot_with_concurrent_writes(&kafka, &topic);
}

/// The records of a 100,000-row snapshot with 20 batches of concurrent writes (100 inserts
/// from 100,001, an update of row `1 + batch * 1000` to n = 1): each of the 102,000 rows read
/// or created exactly once, and every update present (in the snapshot or as an update).
fn check_snapshot_with_concurrent_writes(kafka: &DevKafka, topic: &str) {
    wait_count(kafka, topic, 102_000);
    let ids = |all: &[(Option<Json>, Option<Json>)]| {
        all.iter()
            .filter_map(|(_, v)| v.as_ref())
            .filter(|v| matches!(v["payload"]["op"].as_str(), Some("r" | "c")))
            .map(|v| v["payload"]["after"]["id"].as_i64().unwrap())
            .collect::<std::collections::BTreeSet<i64>>()
            .len()
    };
    let mut all = records(&kafka.bootstrap, topic);
    for _ in 0..20 {
        if ids(&all) >= 102_000 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
        all = records(&kafka.bootstrap, topic);
    }
    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    let mut updates: BTreeMap<i64, i64> = BTreeMap::new();
    for (_, v) in &all {
        let p = &v.as_ref().unwrap()["payload"];
        let id = p["after"]["id"].as_i64().unwrap();
        match p["op"].as_str().unwrap() {
            "r" | "c" => *seen.entry(id).or_default() += 1,
            "u" => {
                updates.insert(id, p["after"]["n"].as_i64().unwrap());
            }
            other => panic!("unexpected op {other}"),
        }
    }
    assert_eq!(seen.len(), 102_000);
    let doubles: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubles.is_empty(),
        "rows read twice: {:?}",
        &doubles[..doubles.len().min(10)]
    );
    // Each updated row ends with n = 1: in the snapshot (if committed before it) or as an update.
    for batch in 0..20 {
        let id = 1 + batch * 1000;
        let from_snapshot = all.iter().any(|(_, v)| {
            let p = &v.as_ref().unwrap()["payload"];
            p["op"] == "r" && p["after"]["id"] == id && p["after"]["n"] == 1
        });
        assert!(
            from_snapshot || updates.get(&id) == Some(&1),
            "row {id}'s update is missing"
        );
    }
}

/// Rows inserted without pause while the connector process is SIGKILLed, then the worker:
/// every row arrives (duplicates counted and bounded), and the slot's confirmed position
/// advances, so the server keeps no WAL for us beyond what was not yet committed.
#[test]
fn postgres_cdc_loses_nothing_when_connector_and_worker_are_killed() {
    let server = OwnPostgres::start();
    let db = server.db();
    let t = table("kill");
    // One row for the snapshot: its record marks the snapshot done once committed (a start
    // before any record was committed snapshots again).
    db.exec(&format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, v TEXT NOT NULL); INSERT INTO {t} VALUES (0, 'v0')"
    ));
    let dir = tempfile::tempdir().unwrap();
    let topic = format!("kill.public.{t}");
    // The embedded broker keeps a few MB per partition: spread the rows by key.
    let kafka = DevKafka::start(dir.path(), &[&format!("{topic}:8")]);
    let file = connector_file(
        dir.path(),
        "cdc",
        &cdc(&server, "kill", &format!("public\\.{t}"), &[]),
    );
    let mut sluice = standalone_on(dir.path(), &kafka, std::slice::from_ref(&file));
    let insert = |from: i64, to: i64| {
        db.exec(&format!(
            "INSERT INTO {t} SELECT g, 'v' || g FROM generate_series({from}, {to}) g"
        ));
    };
    // Let the snapshot finish and the stream begin.
    wait_for("the stream to begin", TIMEOUT, || {
        sluice.output().contains("streaming from replication slot")
    });
    let mut next = 1;
    for _ in 0..20 {
        insert(next, next + 49);
        next += 50;
        std::thread::sleep(Duration::from_millis(30));
    }
    let before_kill = confirmed_lsn(&db, "debezium");
    let pid = sluice.connector_pid("cdc").expect("connector pid");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    for _ in 0..20 {
        insert(next, next + 49);
        next += 50;
        std::thread::sleep(Duration::from_millis(30));
    }
    wait_count(&kafka, &topic, 1500);
    sluice.signal(libc::SIGKILL);
    let _ = sluice.wait(Duration::from_secs(10));
    for _ in 0..10 {
        insert(next, next + 49);
        next += 50;
    }
    let mut sluice = standalone_on(dir.path(), &kafka, std::slice::from_ref(&file));
    let total = next;
    let captured = || -> std::collections::BTreeSet<i64> {
        records(&kafka.bootstrap, &topic)
            .iter()
            .filter_map(|(_, v)| v.as_ref())
            .map(|v| v["payload"]["after"]["id"].as_i64().unwrap())
            .collect()
    };
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut ids = captured();
    while (ids.len() as i64) < total && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        ids = captured();
    }
    let missing: Vec<i64> = (0..total).filter(|i| !ids.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "{} of {total} rows missing, from {:?} to {:?}; records in all {}\n{}",
        missing.len(),
        missing.first(),
        missing.last(),
        records(&kafka.bootstrap, &topic).len(),
        sluice.output()
    );
    let all = records(&kafka.bootstrap, &topic);
    let lost = total
        - all
            .iter()
            .map(|(_, v)| {
                v.as_ref().unwrap()["payload"]["after"]["id"]
                    .as_i64()
                    .unwrap()
            })
            .collect::<std::collections::BTreeSet<_>>()
            .len() as i64;
    let duplicated = all.len() as i64 - total;
    println!("rows {total}, lost {lost}, duplicated {duplicated}");
    assert_eq!(lost, 0);
    // At-least-once: a kill may repeat what was produced but not yet committed, never more
    // than the rows written since the last commit.
    assert!(duplicated < total / 2, "{duplicated} duplicates of {total}");
    wait_for("the slot's confirmed position to advance", TIMEOUT, || {
        confirmed_lsn(&db, "debezium") > before_kill
    });

    // A clean stop commits what was produced: the next start repeats nothing, although the
    // slot may send a transaction again (it is skipped by the stored offset).
    sluice.stop_cleanly();
    let produced = count(&kafka.bootstrap, &topic);
    insert(next, next + 99);
    let _sluice = standalone_on(dir.path(), &kafka, &[file]);
    wait_count(&kafka, &topic, produced + 100);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count(&kafka.bootstrap, &topic), produced + 100);
}

/// PostgreSQL → CDC → Kafka → JdbcSink → MariaDB, with Kafka's ExtractField taking the
/// envelope's `after` (a delete's null becomes a tombstone that deletes the row): the tables
/// end equal after inserts, updates and deletes.
#[test]
fn postgres_cdc_to_kafka_to_mariadb_tables_end_equal() {
    let server = OwnPostgres::start();
    let (pg, my) = (server.db(), Db::mariadb());
    let t = table("cdcpipe");
    pg.exec(&format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, name TEXT NOT NULL, amount NUMERIC(12,2), flag BOOLEAN);
         INSERT INTO {t} SELECT g, 'name ' || g, g * 1.25, g % 3 = 0 FROM generate_series(1, 500) g;"
    ));
    my.exec(&format!("DROP TABLE IF EXISTS {t}"));
    let dir = tempfile::tempdir().unwrap();
    let topic = format!("pipe.public.{t}");
    let kafka = DevKafka::start(dir.path(), &[&format!("{topic}:1")]);
    let mut sink = vec![
        (
            "connector.class",
            "io.confluent.connect.jdbc.JdbcSinkConnector".to_string(),
        ),
        ("connection.url", my.url.clone()),
        ("topics", topic.clone()),
        ("table.name.format", t.clone()),
        ("insert.mode", "upsert".into()),
        ("pk.mode", "record_key".into()),
        ("delete.enabled", "true".into()),
        ("auto.create", "true".into()),
        ("transforms", "after".into()),
        (
            "transforms.after.type",
            "org.apache.kafka.connect.transforms.ExtractField$Value".into(),
        ),
        ("transforms.after.field", "after".into()),
    ];
    sink.push(("batch.size", "200".into()));
    let files = vec![
        connector_file(
            dir.path(),
            "from-pg",
            &cdc(&server, "pipe", &format!("public\\.{t}"), &[]),
        ),
        connector_file(dir.path(), "to-mariadb", &sink),
    ];
    let sluice = standalone_on(dir.path(), &kafka, &files);
    let pg_rows = || {
        pg.rows(&format!(
            "SELECT id::text AS k, name, amount::text, CASE WHEN flag THEN '1' WHEN NOT flag THEN '0' END FROM {t} ORDER BY id"
        ))
    };
    let my_rows = || {
        if my.count(&format!(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = '{t}'"
        )) == 0
        {
            return Vec::new();
        }
        my.rows(&format!(
            "SELECT id, name, amount, flag FROM {t} ORDER BY id"
        ))
    };
    wait_for("500 rows in MariaDB", TIMEOUT, || my_rows().len() == 500);
    pg.exec(&format!(
        "UPDATE {t} SET name = name || ' (changed)', amount = -amount WHERE id % 10 = 0;
         DELETE FROM {t} WHERE id % 7 = 0;
         INSERT INTO {t} SELECT g, 'later ' || g, NULL, NULL FROM generate_series(501, 700) g;"
    ));
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut last = (pg_rows(), my_rows());
    while last.0 != last.1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        last = (pg_rows(), my_rows());
    }
    let first_difference = last
        .0
        .iter()
        .zip(&last.1)
        .find(|(a, b)| a != b)
        .map(|(a, b)| format!("{a:?} != {b:?}"));
    assert!(
        last.0 == last.1,
        "PostgreSQL has {} rows, MariaDB {}; first difference: {first_difference:?}\n{}",
        last.0.len(),
        last.1.len(),
        sluice.output()
    );
    // 500 rows, 71 of them deleted (multiples of 7), 200 inserted.
    assert_eq!(last.0.len(), 629, "{}", sluice.output());
    pg.exec(&format!("DROP TABLE {t}"));
    my.exec(&format!("DROP TABLE {t}"));
}

/// `sluice plugins check` passes the connector by Debezium's class name against a real
/// server; and a server with `wal_level=replica` is refused by validation with the fix.
#[test]
fn postgres_cdc_passes_the_kit_and_explains_wal_level() {
    let server = OwnPostgres::start();
    let db = server.db();
    let t = table("kit");
    db.exec(&format!(
        "CREATE TABLE {t} (id SERIAL PRIMARY KEY, v TEXT);
         INSERT INTO {t} (v) SELECT 'x' FROM generate_series(1, 50)"
    ));
    let run = |pairs: &[(&str, String)]| {
        plugins_check(
            "io.debezium.connector.postgresql.PostgresConnector",
            pairs,
            "postgres-cdc",
        )
    };
    let (ok, out) = run(&cdc(&server, "kit", &format!("public\\.{t}"), &[]));
    assert!(ok, "{out}");
    assert!(out.contains(" passed, 0 failed"), "{out}");
    assert!(!out.contains("never-shown-secret"), "{out}");

    // A server without logical decoding is refused by validation, with the fix.
    let replica = OwnPostgres::start_with_wal_level("replica");
    let (ok, out) = run(&cdc(&replica, "kit", "public\\.x", &[]));
    assert!(!ok, "{out}");
    assert!(
        out.contains("wal_level") && out.contains("ALTER SYSTEM SET wal_level = logical"),
        "{out}"
    );
}

/// `snapshot.mode=never` streams only what comes after the slot; `initial_only` reads the
/// table and stops, with no slot; `heartbeat.interval.ms` moves the slot past writes to
/// tables nobody captures (Debezium's heartbeat records on `__debezium-heartbeat.<prefix>`).
#[test]
fn postgres_cdc_snapshot_modes_and_heartbeats() {
    let server = OwnPostgres::start();
    let db = server.db();
    let (t, other) = (table("modes"), table("other"));
    db.exec(&format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY); INSERT INTO {t} VALUES (1);
         CREATE TABLE {other} (id INT PRIMARY KEY);"
    ));
    let dir = tempfile::tempdir().unwrap();
    let (never, only) = (format!("never.public.{t}"), format!("only.public.{t}"));
    let kafka = DevKafka::start(
        dir.path(),
        &[
            &format!("{never}:1"),
            &format!("{only}:1"),
            "__debezium-heartbeat.never:1",
        ],
    );
    let include = format!("public\\.{t}");
    let files = vec![
        connector_file(
            dir.path(),
            "never",
            &cdc(
                &server,
                "never",
                &include,
                &[
                    ("snapshot.mode", "never"),
                    ("slot.name", "never_slot"),
                    ("heartbeat.interval.ms", "300"),
                ],
            ),
        ),
        connector_file(
            dir.path(),
            "only",
            &cdc(
                &server,
                "only",
                &include,
                &[
                    ("snapshot.mode", "initial_only"),
                    ("slot.name", "only_slot"),
                ],
            ),
        ),
    ];
    let sluice = standalone_on(dir.path(), &kafka, &files);
    wait_for("the stream to begin", TIMEOUT, || {
        sluice
            .output()
            .contains("streaming from replication slot \"never_slot\"")
    });
    wait_count(&kafka, &only, 1);
    db.exec(&format!("INSERT INTO {t} VALUES (2)"));
    wait_count(&kafka, &never, 1);
    let streamed = records(&kafka.bootstrap, &never);
    assert_eq!(streamed.len(), 1, "never: no snapshot read");
    assert_eq!(streamed[0].1.as_ref().unwrap()["payload"]["after"]["id"], 2);
    assert_eq!(streamed[0].1.as_ref().unwrap()["payload"]["op"], "c");

    // Writes only to a table not captured: heartbeats carry the slot past them.
    let before = confirmed_lsn(&db, "never_slot");
    for i in 0..20 {
        db.exec(&format!("INSERT INTO {other} VALUES ({i})"));
    }
    let written = db.rows("SELECT (pg_current_wal_lsn() - '0/0')::text")[0][0]
        .clone()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert!(written > before);
    wait_for("the slot to pass the uncaptured writes", TIMEOUT, || {
        confirmed_lsn(&db, "never_slot") >= written
    });
    let beats = records(&kafka.bootstrap, "__debezium-heartbeat.never");
    assert!(!beats.is_empty());
    let beat = beats[0].1.as_ref().unwrap();
    assert_eq!(
        beat["schema"]["name"],
        "io.debezium.connector.common.Heartbeat"
    );
    assert!(beat["payload"]["ts_ms"].as_i64().unwrap() > 1_700_000_000_000);
    assert_eq!(
        beats[0].0.as_ref().unwrap()["payload"],
        serde_json::json!({"serverName": "never"})
    );

    // initial_only: the one row, no slot, nothing streamed.
    let read = records(&kafka.bootstrap, &only);
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].1.as_ref().unwrap()["payload"]["op"], "r");
    assert_eq!(
        db.count("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'only_slot'"),
        0
    );
    assert!(!sluice.output().contains("never-shown-secret"));
}

/// MySqlCdcSource's keys (Debezium's MySQL connector) for `server`, capturing the tables
/// `include` matches.
fn mysql_cdc(
    server: &OwnMariaDb,
    prefix: &str,
    include: &str,
    extra: &[(&str, &str)],
) -> Vec<(&'static str, String)> {
    let mut pairs: Vec<(&'static str, String)> = vec![
        (
            "connector.class",
            "io.debezium.connector.mysql.MySqlConnector".into(),
        ),
        ("database.hostname", "127.0.0.1".into()),
        ("database.port", server.port.to_string()),
        ("database.user", "root".into()),
        ("database.password", "".into()),
        ("database.server.id", "184054".into()),
        ("topic.prefix", prefix.into()),
        ("database.include.list", "test".into()),
        ("table.include.list", include.into()),
        (
            "schema.history.internal.kafka.bootstrap.servers",
            "unused:9092".into(),
        ),
        (
            "schema.history.internal.kafka.topic",
            "schema-changes.test".into(),
        ),
    ];
    for (k, v) in extra {
        pairs.push((Box::leak(k.to_string().into_boxed_str()), v.to_string()));
    }
    pairs
}

/// MariaDB's binlog: a snapshot, then insert, update, a key-changing update and delete of a
/// table with every common type, in Debezium's MySQL envelope (field order, logical types,
/// key, source block with the binlog position), tombstones after deletes.
#[test]
fn mysql_cdc_snapshots_then_streams_every_type_in_debeziums_envelope() {
    let server = OwnMariaDb::start();
    let db = server.db();
    let t = table("mtypes");
    db.exec(&format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, tiny TINYINT, utiny TINYINT UNSIGNED,
           small SMALLINT, med MEDIUMINT, uint INT UNSIGNED, big BIGINT NOT NULL, flag BOOLEAN,
           real4 FLOAT, dbl DOUBLE, num DECIMAL(10,2), name VARCHAR(20), body TEXT, fixed CHAR(3),
           raw VARBINARY(8), blobby BLOB, bit1 BIT(1), bits BIT(12), size ENUM('small','large'),
           tags SET('x','y','z'), yr YEAR, day DATE, at TIME(6), dt DATETIME, dt6 DATETIME(6),
           ts TIMESTAMP(3) NULL, doc JSON);
         INSERT INTO {t} VALUES
           (1, -2, 200, -300, -40000, 4000000000, 9000000000, true, 1.5, -2.25, 12345678.91,
            'café', 'long text', 'ab', X'00ff10', X'0102', b'1', b'101010111100', 'large', 'x,z',
            2024, '2024-02-29', '-26:00:00.000005', '2024-02-29 13:45:01', '1969-12-31 23:59:59.999999',
            '2024-02-29 11:45:01.5', '{{\"a\": [1, 2]}}'),
           (2, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);"
    ));
    let dir = tempfile::tempdir().unwrap();
    let topic = format!("my.test.{t}");
    let kafka = DevKafka::start(dir.path(), &[&format!("{topic}:1")]);
    let file = connector_file(
        dir.path(),
        "mycdc",
        &mysql_cdc(&server, "my", &format!("test\\.{t}"), &[]),
    );
    let sluice = standalone_on(dir.path(), &kafka, &[file]);
    wait_count(&kafka, &topic, 2);
    wait_for("the binlog to be read", TIMEOUT, || {
        sluice.output().contains("reading the binlog from")
    });
    db.exec(&format!(
        "INSERT INTO {t} (id, big, name, utiny, uint, size, tags, bits) VALUES
           (3, 7, 'new', 255, 4294967295, 'small', 'y', b'1');
         UPDATE {t} SET name = 'changed', num = -0.5, ts = '2000-02-29 00:00:00' WHERE id = 3;
         UPDATE {t} SET id = 4 WHERE id = 3;
         DELETE FROM {t} WHERE id = 2;"
    ));
    // r, r, c, u, (d, tombstone, c), d, tombstone
    wait_count(&kafka, &topic, 9);
    let all = records(&kafka.bootstrap, &topic);
    assert_eq!(
        ops(&all),
        ["r", "r", "c", "u", "d", "tombstone", "c", "d", "tombstone"],
        "{}",
        sluice.output()
    );
    let value = all[0].1.as_ref().unwrap();
    let schema = &value["schema"];
    assert_eq!(schema["name"], format!("my.test.{t}.Envelope"));
    let source_schema = &schema["fields"][2];
    assert_eq!(source_schema["name"], "io.debezium.connector.mysql.Source");
    let after_schema = &schema["fields"][1];
    assert_eq!(after_schema["name"], format!("my.test.{t}.Value"));
    let logical: BTreeMap<String, Json> = after_schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["field"].as_str().unwrap().to_string(), json_type(f)))
        .collect();
    let expect = serde_json::json!({
        "id": ["int32", null, false], "tiny": ["int16", null, true], "utiny": ["int16", null, true],
        "small": ["int16", null, true], "med": ["int32", null, true], "uint": ["int64", null, true],
        "big": ["int64", null, false], "flag": ["int16", null, true], "real4": ["float", null, true],
        "dbl": ["double", null, true],
        "num": ["bytes", "org.apache.kafka.connect.data.Decimal", true],
        "name": ["string", null, true], "body": ["string", null, true], "fixed": ["string", null, true],
        "raw": ["bytes", null, true], "blobby": ["bytes", null, true], "bit1": ["boolean", null, true],
        "bits": ["bytes", "io.debezium.data.Bits", true],
        "size": ["string", "io.debezium.data.Enum", true],
        "tags": ["string", "io.debezium.data.EnumSet", true],
        "yr": ["int32", "io.debezium.time.Year", true], "day": ["int32", "io.debezium.time.Date", true],
        "at": ["int64", "io.debezium.time.MicroTime", true],
        "dt": ["int64", "io.debezium.time.Timestamp", true],
        "dt6": ["int64", "io.debezium.time.MicroTimestamp", true],
        "ts": ["string", "io.debezium.time.ZonedTimestamp", true],
        // MariaDB's JSON is LONGTEXT with a check.
        "doc": ["string", null, true],
    });
    assert_eq!(serde_json::to_value(&logical).unwrap(), expect);
    let fields = |name: &str| -> Json {
        after_schema["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["field"] == name)
            .unwrap()["parameters"]
            .clone()
    };
    assert_eq!(
        fields("size"),
        serde_json::json!({"allowed": "small,large"})
    );
    assert_eq!(fields("bits"), serde_json::json!({"length": "12"}));
    assert_eq!(
        fields("num"),
        serde_json::json!({"scale": "2", "connect.decimal.precision": "10"})
    );

    // The snapshot's values (binary protocol) and the binlog's agree on every type.
    let expect_after = serde_json::json!({
        "id": 1, "tiny": -2, "utiny": 200, "small": -300, "med": -40000, "uint": 4000000000u64,
        "big": 9000000000u64, "flag": 1, "real4": 1.5, "dbl": -2.25, "num": "SZYC0w==",
        "name": "café", "body": "long text", "fixed": "ab", "raw": "AP8Q", "blobby": "AQI=",
        "bit1": true, "bits": "vAo=", "size": "large", "tags": "x,z", "yr": 2024, "day": 19782,
        "at": -93600000005i64, "dt": 1709214301000i64, "dt6": -1, "ts": "2024-02-29T11:45:01.5Z",
        "doc": "{\"a\": [1, 2]}",
    });
    let payload = |i: usize| all[i].1.as_ref().unwrap()["payload"].clone();
    assert_eq!(payload(0)["after"], expect_after);
    let nulls = payload(1)["after"].clone();
    assert_eq!(nulls["big"], 0);
    assert!(nulls["tiny"].is_null() && nulls["ts"].is_null() && nulls["bits"].is_null());
    let inserted = payload(2)["after"].clone();
    assert_eq!(
        [
            &inserted["utiny"],
            &inserted["uint"],
            &inserted["size"],
            &inserted["tags"],
            &inserted["bits"]
        ],
        [
            &serde_json::json!(255),
            &serde_json::json!(4294967295u64),
            &serde_json::json!("small"),
            &serde_json::json!("y"),
            &serde_json::json!("AQA="),
        ],
        "unsigned values, ENUM index, SET mask and BIT from the binlog"
    );
    assert_eq!(payload(3)["before"]["name"], "new");
    assert_eq!(payload(3)["after"]["name"], "changed");
    assert_eq!(
        payload(3)["after"]["num"],
        "zg==",
        "-0.50 at scale 2 is -50"
    );
    assert_eq!(payload(3)["after"]["ts"], "2000-02-29T00:00:00Z");
    // The key changed: delete, tombstone, create.
    assert_eq!(payload(4)["before"]["id"], 3);
    assert_eq!(
        all[5].0.as_ref().unwrap()["payload"],
        serde_json::json!({"id": 3})
    );
    assert_eq!(payload(6)["after"]["id"], 4);
    assert_eq!(payload(7)["before"]["id"], 2);
    let key = all[0].0.as_ref().unwrap();
    assert_eq!(key["schema"]["name"], format!("my.test.{t}.Key"));
    assert_eq!(key["payload"], serde_json::json!({"id": 1}));

    // Source blocks: the snapshot's binlog position, then each event's.
    let source = |i: usize| payload(i)["source"].clone();
    assert_eq!(source(0)["snapshot"], "first");
    assert_eq!(source(1)["snapshot"], "last");
    assert_eq!(source(0)["connector"], "mysql");
    assert_eq!(source(0)["name"], "my");
    assert_eq!(source(0)["db"], "test");
    assert_eq!(source(0)["table"], t.as_str());
    assert!(source(0)["file"].as_str().unwrap().starts_with("binlog."));
    assert_eq!(source(2)["snapshot"], "false");
    assert_eq!(source(2)["server_id"], 1);
    assert!(source(2)["pos"].as_i64().unwrap() > source(0)["pos"].as_i64().unwrap());
    assert!(source(3)["pos"].as_i64().unwrap() > source(2)["pos"].as_i64().unwrap());
    assert!(source(2)["ts_ms"].as_i64().unwrap() > 1_700_000_000_000);
    let names: Vec<&str> = source_schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "version",
            "connector",
            "name",
            "ts_ms",
            "snapshot",
            "db",
            "sequence",
            "ts_us",
            "ts_ns",
            "table",
            "server_id",
            "gtid",
            "file",
            "pos",
            "row",
            "thread",
            "query"
        ]
    );
}

/// A snapshot of 100,000 MariaDB rows while another session inserts and updates: each row
/// arrives once, as a snapshot read or as a binlog event, never both and never missing (the
/// snapshot's transaction and its binlog position are one).
#[test]
fn mysql_cdc_snapshot_of_100k_rows_with_concurrent_writes_has_no_gap_or_double() {
    let server = OwnMariaDb::start();
    let db = server.db();
    let t = table("mbig");
    db.exec(&format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, v VARCHAR(40) NOT NULL, n INT NOT NULL DEFAULT 0);
         INSERT INTO {t} (id, v) SELECT seq, CONCAT('row ', seq) FROM seq_1_to_100000;"
    ));
    let dir = tempfile::tempdir().unwrap();
    let topic = format!("mbig.test.{t}");
    let kafka = DevKafka::start(dir.path(), &[&format!("{topic}:32")]);
    let file = connector_file(
        dir.path(),
        "mycdc",
        &mysql_cdc(
            &server,
            "mbig",
            &format!("test\\.{t}"),
            &[("snapshot.fetch.size", "5000")],
        ),
    );
    let _sluice = standalone_on(dir.path(), &kafka, &[file]);
    let writer = server.db();
    for batch in 0..20 {
        let from = 100_001 + batch * 100;
        writer.exec(&format!(
            "INSERT INTO {t} (id, v) SELECT seq, CONCAT('late ', seq) FROM seq_{from}_to_{};
             UPDATE {t} SET n = n + 1 WHERE id = {};",
            from + 99,
            1 + batch * 1000
        ));
        std::thread::sleep(Duration::from_millis(50));
    }
    check_snapshot_with_concurrent_writes(&kafka, &topic);
}

/// Rows inserted without pause while MySqlCdcSource's process is SIGKILLed, then the
/// worker's: every row arrives (duplicates counted and bounded: a restart reads the last
/// transaction again from its first event and skips what was committed); after a clean stop
/// a restart repeats nothing.
#[test]
fn mysql_cdc_loses_nothing_when_connector_and_worker_are_killed() {
    let server = OwnMariaDb::start();
    let db = server.db();
    let t = table("mkill");
    db.exec(&format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, v VARCHAR(20) NOT NULL); INSERT INTO {t} VALUES (0, 'v0')"
    ));
    let dir = tempfile::tempdir().unwrap();
    let topic = format!("mkill.test.{t}");
    let kafka = DevKafka::start(dir.path(), &[&format!("{topic}:8")]);
    let file = connector_file(
        dir.path(),
        "mycdc",
        &mysql_cdc(&server, "mkill", &format!("test\\.{t}"), &[]),
    );
    let mut sluice = standalone_on(dir.path(), &kafka, std::slice::from_ref(&file));
    let insert = |from: i64, to: i64| {
        db.exec(&format!(
            "INSERT INTO {t} SELECT seq, CONCAT('v', seq) FROM seq_{from}_to_{to}"
        ));
    };
    wait_for("the binlog to be read", TIMEOUT, || {
        sluice.output().contains("reading the binlog from")
    });
    let mut next = 1;
    for _ in 0..20 {
        insert(next, next + 49);
        next += 50;
        std::thread::sleep(Duration::from_millis(30));
    }
    let pid = sluice.connector_pid("mycdc").expect("connector pid");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    for _ in 0..20 {
        insert(next, next + 49);
        next += 50;
        std::thread::sleep(Duration::from_millis(30));
    }
    wait_count(&kafka, &topic, 1500);
    sluice.signal(libc::SIGKILL);
    let _ = sluice.wait(Duration::from_secs(10));
    for _ in 0..10 {
        insert(next, next + 49);
        next += 50;
    }
    let mut sluice = standalone_on(dir.path(), &kafka, std::slice::from_ref(&file));
    let total = next;
    let captured = || -> std::collections::BTreeSet<i64> {
        records(&kafka.bootstrap, &topic)
            .iter()
            .filter_map(|(_, v)| v.as_ref())
            .map(|v| v["payload"]["after"]["id"].as_i64().unwrap())
            .collect()
    };
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut ids = captured();
    while (ids.len() as i64) < total && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        ids = captured();
    }
    let missing: Vec<i64> = (0..total).filter(|i| !ids.contains(i)).collect();
    let all = records(&kafka.bootstrap, &topic);
    assert!(
        missing.is_empty(),
        "{} of {total} rows missing, from {:?} to {:?}; records in all {}\n{}",
        missing.len(),
        missing.first(),
        missing.last(),
        all.len(),
        sluice.output()
    );
    let duplicated = all.len() as i64 - total;
    println!("rows {total}, lost 0, duplicated {duplicated}");
    assert!(duplicated < total / 2, "{duplicated} duplicates of {total}");

    // A clean stop commits what was produced: the next start repeats nothing, although it
    // reads the last transaction again (skipped by the stored offset).
    sluice.stop_cleanly();
    let produced = count(&kafka.bootstrap, &topic);
    insert(next, next + 99);
    let _sluice = standalone_on(dir.path(), &kafka, &[file]);
    wait_count(&kafka, &topic, produced + 100);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count(&kafka.bootstrap, &topic), produced + 100);
}

/// `sluice plugins check` passes MySqlCdcSource, and a server without a binlog is refused by
/// validation with what to change.
#[test]
fn mysql_cdc_passes_the_kit_and_explains_the_binlog_settings() {
    let server = OwnMariaDb::start();
    let db = server.db();
    let t = table("mkit");
    db.exec(&format!(
        "CREATE TABLE {t} (id INT AUTO_INCREMENT PRIMARY KEY, v TEXT);
         INSERT INTO {t} (v) SELECT 'x' FROM seq_1_to_50"
    ));
    let run = |pairs: &[(&str, String)]| {
        plugins_check(
            "io.debezium.connector.mysql.MySqlConnector",
            pairs,
            "mysql-cdc",
        )
    };
    // database.server.id left to its default (one chosen per process).
    let mut pairs = mysql_cdc(&server, "kit", &format!("test\\.{t}"), &[]);
    pairs.retain(|(k, _)| *k != "database.server.id");
    let (ok, out) = run(&pairs);
    assert!(ok, "{out}");
    assert!(out.contains(" passed, 0 failed, 0 skipped"), "{out}");

    // Without a binlog, and with statement-based logging: refused, saying what to set.
    let plain = OwnMariaDb::start_with(&[]);
    let (ok, out) = run(&mysql_cdc(&plain, "kit", "test\\.x", &[]));
    assert!(!ok, "{out}");
    assert!(
        out.contains("binary log is off") && out.contains("log_bin"),
        "{out}"
    );
    let mixed = OwnMariaDb::start_with(&["--log-bin=binlog", "--binlog-format=MIXED"]);
    let (ok, out) = run(&mysql_cdc(&mixed, "kit", "test\\.x", &[]));
    assert!(!ok, "{out}");
    assert!(
        out.contains("binlog_format is MIXED") && out.contains("ROW"),
        "{out}"
    );
}

/// MariaDB → MySqlCdcSource → Kafka → JdbcSink → PostgreSQL, with Kafka's ExtractField taking
/// the envelope's `after`: the tables end equal after inserts, updates and deletes.
#[test]
fn mysql_cdc_to_kafka_to_postgres_tables_end_equal() {
    let server = OwnMariaDb::start();
    let (my, pg) = (server.db(), Db::postgres());
    let t = table("mypipe");
    my.exec(&format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL, amount DECIMAL(12,2), flag BOOLEAN);
         INSERT INTO {t} SELECT seq, CONCAT('name ', seq), seq * 1.25, seq % 3 = 0 FROM seq_1_to_500;"
    ));
    pg.exec(&format!("DROP TABLE IF EXISTS {t}"));
    let dir = tempfile::tempdir().unwrap();
    let topic = format!("mypipe.test.{t}");
    let kafka = DevKafka::start(dir.path(), &[&format!("{topic}:1")]);
    let sink = vec![
        (
            "connector.class",
            "io.confluent.connect.jdbc.JdbcSinkConnector".to_string(),
        ),
        ("connection.url", pg.url.clone()),
        ("topics", topic.clone()),
        ("table.name.format", t.clone()),
        ("insert.mode", "upsert".into()),
        ("pk.mode", "record_key".into()),
        ("delete.enabled", "true".into()),
        ("auto.create", "true".into()),
        ("batch.size", "200".into()),
        ("transforms", "after".into()),
        (
            "transforms.after.type",
            "org.apache.kafka.connect.transforms.ExtractField$Value".into(),
        ),
        ("transforms.after.field", "after".into()),
    ];
    let files = vec![
        connector_file(
            dir.path(),
            "from-mariadb",
            &mysql_cdc(&server, "mypipe", &format!("test\\.{t}"), &[]),
        ),
        connector_file(dir.path(), "to-postgres", &sink),
    ];
    let sluice = standalone_on(dir.path(), &kafka, &files);
    let my_rows = || {
        my.rows(&format!(
            "SELECT id, name, amount, flag FROM {t} ORDER BY id"
        ))
    };
    let pg_rows = || {
        if pg.count(&format!(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = '{t}'"
        )) == 0
        {
            return Vec::new();
        }
        pg.rows(&format!(
            "SELECT id::text, name, amount::text, flag::text FROM {t} ORDER BY {t}.id"
        ))
    };
    wait_for("500 rows in PostgreSQL", TIMEOUT, || pg_rows().len() == 500);
    my.exec(&format!(
        "UPDATE {t} SET name = CONCAT(name, ' (changed)'), amount = -amount WHERE id % 10 = 0;
         DELETE FROM {t} WHERE id % 7 = 0;
         INSERT INTO {t} SELECT seq, CONCAT('later ', seq), NULL, NULL FROM seq_501_to_700;"
    ));
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut last = (my_rows(), pg_rows());
    while last.0 != last.1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        last = (my_rows(), pg_rows());
    }
    let first_difference = last
        .0
        .iter()
        .zip(&last.1)
        .find(|(a, b)| a != b)
        .map(|(a, b)| format!("{a:?} != {b:?}"));
    assert!(
        last.0 == last.1,
        "MariaDB has {} rows, PostgreSQL {}; first difference: {first_difference:?}\n{}",
        last.0.len(),
        last.1.len(),
        sluice.output()
    );
    assert_eq!(last.0.len(), 629, "{}", sluice.output());
    pg.exec(&format!("DROP TABLE {t}"));
}
