//! The database connectors against the real PostgreSQL and MariaDB servers of this machine,
//! through `sluice standalone` and a `sluice dev-kafka` broker: JdbcSource in every mode on
//! both databases (every column type checked byte for byte through JsonConverter, restarts
//! resuming without loss or double, equal timestamps, new tables), JdbcSink in every insert
//! and key mode (auto.create/evolve, deletes, the dead-letter queue, exactly-once under
//! SIGKILL), and a database → Kafka → database pipeline.

mod harness;

use std::time::Duration;

use harness::cluster::{read_all, tasks, total_records, Api};
use harness::db::{table, Db, Kind};
use harness::*;
use sluice_proto::api::v1 as api;

const TIMEOUT: Duration = Duration::from_secs(90);

/// The values of `topic`, as text.
fn values(kafka: &DevKafka, topic: &str) -> Vec<String> {
    read_all(&kafka.bootstrap, topic)
        .into_iter()
        .map(|(_, _, v, _)| String::from_utf8_lossy(&v.unwrap_or_default()).into_owned())
        .collect()
}

fn wait_records(kafka: &DevKafka, topic: &str, at_least: i64) {
    wait_for(&format!("{at_least} records in {topic}"), TIMEOUT, || {
        total_records(&kafka.bootstrap, topic) >= at_least
    });
}

/// The JSON payloads' field `field` of every record of `topic`.
fn payload_field(kafka: &DevKafka, topic: &str, field: &str) -> Vec<serde_json::Value> {
    values(kafka, topic)
        .iter()
        .map(|v| {
            let json: serde_json::Value = serde_json::from_str(v).expect("JSON value");
            json["payload"][field].clone()
        })
        .collect()
}

fn source(db: &Db, mode: &str, extra: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    let mut pairs = vec![
        (
            "connector.class",
            "io.confluent.connect.jdbc.JdbcSourceConnector".to_string(),
        ),
        ("connection.url", db.url.clone()),
        ("mode", mode.to_string()),
        ("poll.interval.ms", "200".to_string()),
        ("table.poll.interval.ms", "500".to_string()),
    ];
    for (k, v) in extra {
        pairs.push((leak(k), v.to_string()));
    }
    pairs
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

// ---------------------------------------------------------------------------------------
// JdbcSource: types

/// The first `n` records JdbcSource (incrementing on `id`) writes for table `t`, as JSON text,
/// and what the worker printed.
fn read_table(db: &Db, t: &str, n: i64) -> (Vec<String>, String) {
    let dir = tempfile::tempdir().unwrap();
    let topic = format!("types-{t}");
    let kafka = DevKafka::start(dir.path(), &[&format!("{topic}:1")]);
    let file = connector_file(
        dir.path(),
        "types",
        &source(
            db,
            "incrementing",
            &[
                ("incrementing.column.name", "id"),
                ("table.whitelist", t),
                ("topic.prefix", "types-"),
            ],
        ),
    );
    let sluice = standalone_on(dir.path(), &kafka, &[file]);
    wait_records(&kafka, &topic, n);
    (values(&kafka, &topic), sluice.output())
}

/// Every common PostgreSQL column type, as Confluent's JDBC source maps it, checked byte for
/// byte through JsonConverter (schema and payload); NULLs in nullable columns; unsupported
/// types (INTERVAL) left out.
#[test]
fn jdbc_source_maps_every_postgresql_type_as_confluent_does() {
    let db = Db::postgres();
    let t = table("pgtypes");
    db.exec(&format!(
        "DROP TABLE IF EXISTS {t};
         CREATE TABLE {t} (id SERIAL PRIMARY KEY, b BOOLEAN NOT NULL, i2 SMALLINT, i4 INTEGER,
           i8 BIGINT, f4 REAL, f8 DOUBLE PRECISION, n NUMERIC(10,2), nu NUMERIC, txt TEXT,
           vc VARCHAR(20), ch CHAR(3), by BYTEA, d DATE, tm TIME, ts TIMESTAMP,
           tstz TIMESTAMPTZ, j JSON, jb JSONB, u UUID, iv INTERVAL);
         INSERT INTO {t} (b, i2, i4, i8, f4, f8, n, nu, txt, vc, ch, by, d, tm, ts, tstz, j, jb, u, iv)
           VALUES (true, -32768, 2147483647, -9223372036854775808, 1.5, -2.25, -12345678.91,
           3.14159, 'tëxt \"quoted\" 🎉', 'varchar', 'ab', '\\xdeadbeef', '2024-02-29', '13:14:15.678',
           '2024-02-29 13:14:15.678', '2024-02-29 13:14:15.678+02', '{{\"a\": [1, 2]}}', '{{\"b\": true}}',
           'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '1 day');
         INSERT INTO {t} (b) VALUES (false);"
    ));
    let (got, output) = read_table(&db, &t, 2);
    let fields = r#"{"type":"int32","optional":false,"field":"id"},{"type":"boolean","optional":false,"field":"b"},{"type":"int16","optional":true,"field":"i2"},{"type":"int32","optional":true,"field":"i4"},{"type":"int64","optional":true,"field":"i8"},{"type":"float","optional":true,"field":"f4"},{"type":"double","optional":true,"field":"f8"},{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2","connect.decimal.precision":"10"},"field":"n"},{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"127"},"field":"nu"},{"type":"string","optional":true,"field":"txt"},{"type":"string","optional":true,"field":"vc"},{"type":"string","optional":true,"field":"ch"},{"type":"bytes","optional":true,"field":"by"},{"type":"int32","optional":true,"name":"org.apache.kafka.connect.data.Date","version":1,"field":"d"},{"type":"int32","optional":true,"name":"org.apache.kafka.connect.data.Time","version":1,"field":"tm"},{"type":"int64","optional":true,"name":"org.apache.kafka.connect.data.Timestamp","version":1,"field":"ts"},{"type":"int64","optional":true,"name":"org.apache.kafka.connect.data.Timestamp","version":1,"field":"tstz"},{"type":"string","optional":true,"field":"j"},{"type":"string","optional":true,"field":"jb"},{"type":"string","optional":true,"field":"u"}"#;
    let schema =
        format!(r#"{{"type":"struct","fields":[{fields}],"optional":false,"name":"{t}"}}"#);
    let expected = [
        format!(
            r#"{{"schema":{schema},"payload":{{"id":1,"b":true,"i2":-32768,"i4":2147483647,"i8":-9223372036854775808,"f4":1.5,"f8":-2.25,"n":"tmn9LQ==","nu":"{nu}","txt":"tëxt \"quoted\" \uD83C\uDF89","vc":"varchar","ch":"ab ","by":"3q2+7w==","d":19782,"tm":47655678,"ts":1709212455678,"tstz":1709205255678,"j":"{{\"a\": [1, 2]}}","jb":"{{\"b\": true}}","u":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}}}}"#,
            nu = NU_PI
        ),
        format!(
            r#"{{"schema":{schema},"payload":{{"id":2,"b":false,"i2":null,"i4":null,"i8":null,"f4":null,"f8":null,"n":null,"nu":null,"txt":null,"vc":null,"ch":null,"by":null,"d":null,"tm":null,"ts":null,"tstz":null,"j":null,"jb":null,"u":null}}}}"#
        ),
    ];
    assert_eq!(got, expected);
    assert!(
        output.contains("has type interval, which has no Connect type"),
        "{output}"
    );
    db.exec(&format!("DROP TABLE {t}"));
}

/// 3.14159 at scale 127, as Java's `BigInteger.toByteArray` and base64 write it.
const NU_PI: &str = "ALmj0AilPz5MKYee2FRHnBNunzVnhcW5obxMNsErgn/rlrDHz3ncAAAAAAAAAAAAAAAAAAAA";

/// Every common MariaDB column type, as Confluent's JDBC source maps it (signed and unsigned
/// integers one width up, DECIMAL, TINYINT(1)/BIT(1) as INT8), byte for byte through
/// JsonConverter.
#[test]
fn jdbc_source_maps_every_mariadb_type_as_confluent_does() {
    let db = Db::mariadb();
    let t = table("mytypes");
    db.exec(&format!(
        "DROP TABLE IF EXISTS {t};
CREATE TABLE {t} (id INT AUTO_INCREMENT PRIMARY KEY, b TINYINT(1) NOT NULL, ti TINYINT, tu TINYINT UNSIGNED,
  si SMALLINT, mi MEDIUMINT, i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED, f FLOAT, dbl DOUBLE,
  de DECIMAL(10,2), vc VARCHAR(20), txt TEXT, bin VARBINARY(8), bl BLOB, d DATE, tm TIME(3), dt DATETIME(6),
  ts TIMESTAMP(3) NULL, e ENUM('x','y'), j JSON, bt BIT(1));
INSERT INTO {t} (b, ti, tu, si, mi, i, iu, bi, bu, f, dbl, de, vc, txt, bin, bl, d, tm, dt, ts, e, j, bt)
  VALUES (1, -128, 255, -32768, -8388608, -2147483648, 4294967295, -9223372036854775808,
  18446744073709551615, 1.5, -2.25, -12345678.91, 'varchar', 'tëxt 🎉', x'deadbeef', x'00ff',
  '2024-02-29', '13:14:15.678', '2024-02-29 13:14:15.678901', '2024-02-29 13:14:15.678', 'y', '{{\"a\": 1}}', b'1');
INSERT INTO {t} (b) VALUES (0)"
    ));
    let (got, _) = read_table(&db, &t, 2);
    let fields = r#"{"type":"int32","optional":false,"field":"id"},{"type":"int8","optional":false,"field":"b"},{"type":"int8","optional":true,"field":"ti"},{"type":"int16","optional":true,"field":"tu"},{"type":"int16","optional":true,"field":"si"},{"type":"int32","optional":true,"field":"mi"},{"type":"int32","optional":true,"field":"i"},{"type":"int64","optional":true,"field":"iu"},{"type":"int64","optional":true,"field":"bi"},{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"0","connect.decimal.precision":"20"},"field":"bu"},{"type":"float","optional":true,"field":"f"},{"type":"double","optional":true,"field":"dbl"},{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2","connect.decimal.precision":"10"},"field":"de"},{"type":"string","optional":true,"field":"vc"},{"type":"string","optional":true,"field":"txt"},{"type":"bytes","optional":true,"field":"bin"},{"type":"bytes","optional":true,"field":"bl"},{"type":"int32","optional":true,"name":"org.apache.kafka.connect.data.Date","version":1,"field":"d"},{"type":"int32","optional":true,"name":"org.apache.kafka.connect.data.Time","version":1,"field":"tm"},{"type":"int64","optional":true,"name":"org.apache.kafka.connect.data.Timestamp","version":1,"field":"dt"},{"type":"int64","optional":true,"name":"org.apache.kafka.connect.data.Timestamp","version":1,"field":"ts"},{"type":"string","optional":true,"field":"e"},{"type":"string","optional":true,"field":"j"},{"type":"int8","optional":true,"field":"bt"}"#;
    let schema =
        format!(r#"{{"type":"struct","fields":[{fields}],"optional":false,"name":"{t}"}}"#);
    let expected = [
        format!(
            r#"{{"schema":{schema},"payload":{{"id":1,"b":1,"ti":-128,"tu":255,"si":-32768,"mi":-8388608,"i":-2147483648,"iu":4294967295,"bi":-9223372036854775808,"bu":"AP//////////","f":1.5,"dbl":-2.25,"de":"tmn9LQ==","vc":"varchar","txt":"tëxt \uD83C\uDF89","bin":"3q2+7w==","bl":"AP8=","d":19782,"tm":47655678,"dt":1709212455678,"ts":1709212455678,"e":"y","j":"{{\"a\": 1}}","bt":1}}}}"#
        ),
        format!(
            r#"{{"schema":{schema},"payload":{{"id":2,"b":0,"ti":null,"tu":null,"si":null,"mi":null,"i":null,"iu":null,"bi":null,"bu":null,"f":null,"dbl":null,"de":null,"vc":null,"txt":null,"bin":null,"bl":null,"d":null,"tm":null,"dt":null,"ts":null,"e":null,"j":null,"bt":null}}}}"#
        ),
    ];
    assert_eq!(got, expected);
    db.exec(&format!("DROP TABLE {t}"));
}

// ---------------------------------------------------------------------------------------
// JdbcSource: modes, restarts

/// The `id` of every record of `topic`, in order.
fn ids(kafka: &DevKafka, topic: &str) -> Vec<i64> {
    payload_field(kafka, topic, "id")
        .iter()
        .map(|v| v.as_i64().expect("an integer id"))
        .collect()
}

/// Every mode on one database: incrementing (on the auto-increment column found by the
/// connector), timestamp and timestamp+incrementing tables and a custom query, read in batches of 7 rows through runs of equal timestamps; then a clean
/// stop, more rows (new rows with a timestamp equal to the last one read must not be skipped
/// in timestamp+incrementing mode), a restart that resumes exactly after the last committed
/// row, and a SIGKILL of the worker that loses nothing.
fn source_modes_resume_exactly(db: Db, prefix: &str) {
    let q = |s: &str| db.quote(s);
    let (serial, ts_type) = match db.kind {
        Kind::Postgres => ("SERIAL PRIMARY KEY", "TIMESTAMP(3)"),
        Kind::MariaDb => ("INT AUTO_INCREMENT PRIMARY KEY", "DATETIME(3)"),
    };
    let [inc, ts, tsinc, bulk] = ["inc", "ts", "tsinc", "bulk"].map(table);
    let (t1, t2, t3) = (
        "2024-01-01 10:00:00.000",
        "2024-01-01 11:00:00.500",
        "2024-01-02 00:00:00.000",
    );
    let insert = |t: &str, n: usize, stamp: Option<&str>| {
        for _ in 0..n {
            match stamp {
                Some(s) => db.exec(&format!(
                    "INSERT INTO {} ({}, {}) VALUES ('{s}', 'x')",
                    q(t),
                    q("ts"),
                    q("v")
                )),
                None => db.exec(&format!("INSERT INTO {} ({}) VALUES ('x')", q(t), q("v"))),
            }
        }
    };
    for t in [&inc, &bulk] {
        db.exec(&format!("DROP TABLE IF EXISTS {}", q(t)));
        db.exec(&format!("CREATE TABLE {} (id {serial}, v TEXT)", q(t)));
    }
    for t in [&ts, &tsinc] {
        db.exec(&format!("DROP TABLE IF EXISTS {}", q(t)));
        db.exec(&format!(
            "CREATE TABLE {} (id {serial}, ts {ts_type} NOT NULL, v TEXT)",
            q(t)
        ));
    }
    insert(&inc, 25, None);
    insert(&bulk, 3, None);
    insert(&ts, 10, Some(t1));
    insert(&ts, 15, Some(t2));
    insert(&tsinc, 25, Some(t1));

    let dir = tempfile::tempdir().unwrap();
    let topic = |t: &str| format!("{prefix}{t}");
    let query_topic = format!("{prefix}query");
    let kafka = DevKafka::start(dir.path(), &[]);
    let common = |mode: &str, extra: &[(&str, &str)]| {
        let mut more = vec![("topic.prefix", prefix), ("batch.max.rows", "7")];
        more.extend_from_slice(extra);
        source(&db, mode, &more)
    };
    let files = vec![
        connector_file(
            dir.path(),
            "c-inc",
            // No column named: the table's auto-increment column, as Confluent finds it.
            &common("incrementing", &[("table.whitelist", &inc)]),
        ),
        connector_file(
            dir.path(),
            "c-ts",
            &common(
                "timestamp",
                &[("timestamp.column.name", "ts"), ("table.whitelist", &ts)],
            ),
        ),
        connector_file(
            dir.path(),
            "c-tsinc",
            &common(
                "timestamp+incrementing",
                &[
                    ("timestamp.column.name", "ts"),
                    ("incrementing.column.name", "id"),
                    ("table.whitelist", &tsinc),
                ],
            ),
        ),
        connector_file(
            dir.path(),
            "c-bulk",
            &common("bulk", &[("table.whitelist", &bulk)]),
        ),
        connector_file(
            dir.path(),
            "c-query",
            &source(
                &db,
                "incrementing",
                &[
                    ("incrementing.column.name", "id"),
                    ("query", &format!("SELECT id, v FROM {}", q(&inc))),
                    ("topic.prefix", &query_topic),
                    ("batch.max.rows", "7"),
                ],
            ),
        ),
    ];
    let mut sluice = standalone_on(dir.path(), &kafka, &files);
    wait_records(&kafka, &topic(&inc), 25);
    wait_records(&kafka, &topic(&ts), 25);
    wait_records(&kafka, &topic(&tsinc), 25);
    wait_records(&kafka, &query_topic, 25);
    wait_records(&kafka, &topic(&bulk), 6);
    let one_to = |n: i64| (1..=n).collect::<Vec<_>>();
    assert_eq!(ids(&kafka, &topic(&inc)), one_to(25));
    assert_eq!(ids(&kafka, &topic(&ts)), one_to(25));
    assert_eq!(ids(&kafka, &topic(&tsinc)), one_to(25));
    assert_eq!(ids(&kafka, &query_topic), one_to(25));
    let bulk_ids = ids(&kafka, &topic(&bulk));
    assert_eq!(
        bulk_ids[..6],
        [1, 2, 3, 1, 2, 3],
        "bulk reads the whole table each time"
    );
    let schema_name = |t: &str| {
        let v: serde_json::Value = serde_json::from_str(&values(&kafka, t)[0]).unwrap();
        v["schema"]["name"].clone()
    };
    assert_eq!(schema_name(&topic(&inc)), serde_json::json!(inc));
    assert_eq!(
        schema_name(&query_topic),
        serde_json::Value::Null,
        "a query's struct has no name"
    );

    sluice.stop_cleanly();
    insert(&inc, 10, None);
    insert(&ts, 5, Some(t3));
    insert(&tsinc, 10, Some(t1));
    let mut sluice = standalone_on(dir.path(), &kafka, &files);
    wait_records(&kafka, &topic(&inc), 35);
    wait_records(&kafka, &topic(&ts), 30);
    wait_records(&kafka, &topic(&tsinc), 35);
    wait_records(&kafka, &query_topic, 35);
    // Let a double, if any, arrive before counting.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        ids(&kafka, &topic(&inc)),
        one_to(35),
        "incrementing after a restart"
    );
    assert_eq!(
        ids(&kafka, &topic(&ts)),
        one_to(30),
        "timestamp after a restart"
    );
    assert_eq!(
        ids(&kafka, &topic(&tsinc)),
        one_to(35),
        "timestamp+incrementing after a restart, equal timestamps included"
    );
    assert_eq!(
        ids(&kafka, &query_topic),
        one_to(35),
        "query after a restart"
    );

    // SIGKILL of the worker while rows arrive: nothing is lost (at least once).
    insert(&inc, 30, None);
    wait_records(&kafka, &topic(&inc), 40);
    sluice.signal(libc::SIGKILL);
    sluice.wait(Duration::from_secs(10));
    insert(&inc, 10, None);
    let _sluice = standalone_on(dir.path(), &kafka, &files);
    wait_records(&kafka, &topic(&inc), 75);
    let mut seen = ids(&kafka, &topic(&inc));
    seen.sort();
    seen.dedup();
    assert_eq!(seen, one_to(75), "nothing lost after a SIGKILL");
    for t in [&inc, &ts, &tsinc, &bulk] {
        db.exec(&format!("DROP TABLE {}", q(t)));
    }
}

#[test]
fn jdbc_source_modes_resume_exactly_on_postgresql() {
    source_modes_resume_exactly(Db::postgres(), "pgm-");
}

#[test]
fn jdbc_source_modes_resume_exactly_on_mariadb() {
    source_modes_resume_exactly(Db::mariadb(), "mym-");
}

// ---------------------------------------------------------------------------------------
// JdbcSink

/// Produces (key, value) pairs; `None` is a null key or a tombstone.
fn produce_keyed(bootstrap: &str, topic: &str, records: &[(Option<String>, Option<String>)]) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    for (k, v) in records {
        let mut record = BaseRecord::<str, str>::to(topic);
        if let Some(k) = k {
            record = record.key(k.as_str());
        }
        if let Some(v) = v {
            record = record.payload(v.as_str());
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// A JsonConverter envelope of a struct: fields as (name, schema JSON, value JSON).
fn envelope(fields: &[(&str, &str, &str)]) -> String {
    let schemas: Vec<String> = fields
        .iter()
        .map(|(n, s, _)| {
            let s = s.strip_suffix('}').expect("a JSON object");
            format!(r#"{s},"field":"{n}"}}"#)
        })
        .collect();
    let values: Vec<String> = fields
        .iter()
        .map(|(n, _, v)| format!(r#""{n}":{v}"#))
        .collect();
    format!(
        r#"{{"schema":{{"type":"struct","fields":[{}],"optional":false}},"payload":{{{}}}}}"#,
        schemas.join(","),
        values.join(",")
    )
}

const INT32: &str = r#"{"type":"int32","optional":false}"#;
const STRING: &str = r#"{"type":"string","optional":false}"#;
const OPT_STRING: &str = r#"{"type":"string","optional":true}"#;
const OPT_INT32: &str = r#"{"type":"int32","optional":true}"#;
const DECIMAL2: &str = r#"{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2"}}"#;
const DATE: &str =
    r#"{"type":"int32","optional":true,"name":"org.apache.kafka.connect.data.Date","version":1}"#;
const TIMESTAMP: &str = r#"{"type":"int64","optional":true,"name":"org.apache.kafka.connect.data.Timestamp","version":1}"#;

fn sink(db: &Db, topic: &str, extra: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    let mut pairs = vec![
        (
            "connector.class",
            "io.confluent.connect.jdbc.JdbcSinkConnector".to_string(),
        ),
        ("connection.url", db.url.clone()),
        ("topics", topic.to_string()),
        ("retry.backoff.ms", "200".to_string()),
    ];
    for (k, v) in extra {
        pairs.push((leak(k), v.to_string()));
    }
    pairs
}

/// Rows of a table ordered by its first column, as text.
fn table_rows(db: &Db, t: &str, columns: &str) -> Vec<Vec<Option<String>>> {
    db.rows(&format!("SELECT {columns} FROM {} ORDER BY 1", db.quote(t)))
}

fn text(v: &[&str]) -> Vec<Option<String>> {
    v.iter()
        .map(|s| (*s != "NULL").then(|| s.to_string()))
        .collect()
}

/// Each insert and key mode on one database: upsert by record key with deletes and logical
/// types into a created table, inserts keyed by Kafka coordinates, updates by value fields,
/// a table evolved for a new field, and records the database or the connector refuses sent
/// to the dead-letter queue while the rest are written.
fn sink_modes(db: Db, prefix: &str) {
    let [a, b, c, d, e] = ["upsert", "kafka", "update", "evolve", "dlq"].map(table);
    for t in [&a, &b, &c, &d, &e] {
        db.exec(&format!("DROP TABLE IF EXISTS {}", db.quote(t)));
    }
    db.exec(&format!(
        "CREATE TABLE {} (id INT PRIMARY KEY, name TEXT)",
        db.quote(&c)
    ));
    db.exec(&format!(
        "INSERT INTO {} (id, name) VALUES (1, 'old'), (2, 'old')",
        db.quote(&c)
    ));
    db.exec(&format!(
        "CREATE TABLE {} (id INT PRIMARY KEY, name TEXT NOT NULL)",
        db.quote(&e)
    ));
    let dir = tempfile::tempdir().unwrap();
    let topic = |t: &str| format!("{prefix}{t}");
    let dlq = format!("{prefix}dlq");
    let kafka = DevKafka::start(dir.path(), &[&format!("{dlq}:1")]);
    let key = |id: i32| Some(envelope(&[("id", INT32, &id.to_string())]));
    let val = |fields: &[(&str, &str, &str)]| Some(envelope(fields));
    produce_keyed(
        &kafka.bootstrap,
        &topic(&a),
        &[
            (
                key(1),
                val(&[
                    ("name", STRING, r#""a""#),
                    ("qty", OPT_INT32, "1"),
                    ("amount", DECIMAL2, r#""AJw=""#),
                    ("day", DATE, "19782"),
                    ("at", TIMESTAMP, "1709212455678"),
                ]),
            ),
            (
                key(2),
                val(&[
                    ("name", STRING, r#""b""#),
                    ("qty", OPT_INT32, "2"),
                    ("amount", DECIMAL2, "null"),
                    ("day", DATE, "null"),
                    ("at", TIMESTAMP, "null"),
                ]),
            ),
            (
                key(1),
                val(&[
                    ("name", STRING, r#""a2""#),
                    ("qty", OPT_INT32, "3"),
                    ("amount", DECIMAL2, r#""/2Q=""#),
                    ("day", DATE, "0"),
                    ("at", TIMESTAMP, "0"),
                ]),
            ),
            (
                key(3),
                val(&[
                    ("name", STRING, r#""c""#),
                    ("qty", OPT_INT32, "null"),
                    ("amount", DECIMAL2, "null"),
                    ("day", DATE, "null"),
                    ("at", TIMESTAMP, "null"),
                ]),
            ),
            (key(2), None),
        ],
    );
    produce_keyed(
        &kafka.bootstrap,
        &topic(&b),
        &[
            (None, val(&[("name", STRING, r#""x""#)])),
            (None, val(&[("name", STRING, r#""y""#)])),
            (None, val(&[("name", STRING, r#""x""#)])),
        ],
    );
    produce_keyed(
        &kafka.bootstrap,
        &topic(&c),
        &[
            (
                None,
                val(&[("id", INT32, "1"), ("name", STRING, r#""new""#)]),
            ),
            (
                None,
                val(&[("id", INT32, "3"), ("name", STRING, r#""none""#)]),
            ),
        ],
    );
    produce_keyed(
        &kafka.bootstrap,
        &topic(&d),
        &[
            (None, val(&[("a", INT32, "1")])),
            (None, val(&[("a", INT32, "2"), ("b", OPT_STRING, r#""x""#)])),
        ],
    );
    produce_keyed(
        &kafka.bootstrap,
        &topic(&e),
        &[
            (
                None,
                val(&[("id", INT32, "1"), ("name", OPT_STRING, r#""a""#)]),
            ),
            (
                None,
                Some(
                    r#"{"schema":{"type":"string","optional":false},"payload":"not a struct"}"#
                        .to_string(),
                ),
            ),
            (
                None,
                val(&[("id", INT32, "2"), ("name", OPT_STRING, "null")]),
            ),
            (
                None,
                val(&[("id", INT32, "3"), ("name", OPT_STRING, r#""c""#)]),
            ),
        ],
    );
    let files = vec![
        connector_file(
            dir.path(),
            "s-upsert",
            &sink(
                &db,
                &topic(&a),
                &[
                    ("table.name.format", "${topic}"),
                    ("insert.mode", "upsert"),
                    ("pk.mode", "record_key"),
                    ("delete.enabled", "true"),
                    ("auto.create", "true"),
                ],
            ),
        ),
        connector_file(
            dir.path(),
            "s-kafka",
            &sink(
                &db,
                &topic(&b),
                &[
                    ("table.name.format", &b),
                    ("pk.mode", "kafka"),
                    ("auto.create", "true"),
                ],
            ),
        ),
        connector_file(
            dir.path(),
            "s-update",
            &sink(
                &db,
                &topic(&c),
                &[
                    ("table.name.format", &c),
                    ("insert.mode", "update"),
                    ("pk.mode", "record_value"),
                    ("pk.fields", "id"),
                ],
            ),
        ),
        connector_file(
            dir.path(),
            "s-evolve",
            &sink(
                &db,
                &topic(&d),
                &[
                    ("table.name.format", &d),
                    ("auto.create", "true"),
                    ("auto.evolve", "true"),
                ],
            ),
        ),
        connector_file(
            dir.path(),
            "s-dlq",
            &sink(
                &db,
                &topic(&e),
                &[
                    ("table.name.format", &e),
                    ("pk.mode", "record_value"),
                    ("pk.fields", "id"),
                    ("errors.tolerance", "all"),
                    ("errors.deadletterqueue.topic.name", &dlq),
                    ("errors.deadletterqueue.context.headers.enable", "true"),
                ],
            ),
        ),
    ];
    let a_table = topic(&a);
    let sluice = standalone_on(dir.path(), &kafka, &files);
    let exists = |t: &str| {
        db.count(&format!(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = '{t}'"
        )) > 0
    };
    wait_for("the upserts and deletes", TIMEOUT, || {
        exists(&a_table) && db.count(&format!("SELECT count(*) FROM {}", db.quote(&a_table))) == 2
    });
    wait_for("the kafka-keyed inserts", TIMEOUT, || {
        exists(&b) && db.count(&format!("SELECT count(*) FROM {}", db.quote(&b))) == 3
    });
    wait_for("the update", TIMEOUT, || {
        table_rows(&db, &c, "id, name")[0] == text(&["1", "new"])
    });
    wait_for("the evolved table's rows", TIMEOUT, || {
        exists(&d) && db.count(&format!("SELECT count(*) FROM {}", db.quote(&d))) == 2
    });
    wait_for("the dead-letter queue", TIMEOUT, || {
        total_records(&kafka.bootstrap, &dlq) >= 2
    });
    wait_for("the rows around the refused ones", TIMEOUT, || {
        db.count(&format!("SELECT count(*) FROM {}", db.quote(&e))) == 2
    });
    let (amount, day0, at) = match db.kind {
        Kind::Postgres => ("-1.56", "1970-01-01", "1970-01-01 00:00:00"),
        Kind::MariaDb => ("-1.56", "1970-01-01", "1970-01-01 00:00:00.000"),
    };
    assert_eq!(
        table_rows(&db, &a_table, "id, name, qty, amount, day, at"),
        [
            text(&["1", "a2", "3", amount, day0, at]),
            text(&["3", "c", "NULL", "NULL", "NULL", "NULL"]),
        ],
        "upserts by key, the tombstone deleted row 2"
    );
    assert_eq!(
        table_rows(
            &db,
            &b,
            "__connect_offset, __connect_partition, __connect_topic, name"
        ),
        [
            text(&["0", "0", &topic(&b), "x"]),
            text(&["1", "0", &topic(&b), "y"]),
            text(&["2", "0", &topic(&b), "x"]),
        ]
    );
    assert_eq!(
        table_rows(&db, &c, "id, name"),
        [text(&["1", "new"]), text(&["2", "old"])],
        "update changes existing rows and inserts none"
    );
    assert_eq!(
        table_rows(&db, &d, "a, b"),
        [text(&["1", "NULL"]), text(&["2", "x"])],
        "a column added for the new optional field"
    );
    assert_eq!(
        table_rows(&db, &e, "id, name"),
        [text(&["1", "a"]), text(&["3", "c"])]
    );
    let dead = read_all(&kafka.bootstrap, &dlq);
    let reasons: Vec<&str> = dead
        .iter()
        .map(|(_, _, _, h)| {
            h.get("__connect.errors.exception.message")
                .map_or("", String::as_str)
        })
        .collect();
    assert_eq!(dead.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].contains("needs records whose value is a struct"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].to_lowercase().contains("null"),
        "the database's NOT NULL refusal: {reasons:?}"
    );
    drop(sluice);
    for t in [&a_table, &b, &c, &d, &e] {
        db.exec(&format!("DROP TABLE IF EXISTS {}", db.quote(t)));
    }
}

#[test]
fn jdbc_sink_modes_on_postgresql() {
    sink_modes(Db::postgres(), "pgs-");
}

#[test]
fn jdbc_sink_modes_on_mariadb() {
    sink_modes(Db::mariadb(), "mys-");
}

/// `offsets.storage=table`: rows and offsets commit together and the task resumes from the
/// offsets in the database, so SIGKILLs of the worker at three points leave each of 20,000
/// records applied exactly once, on both databases (plain inserts without a key: a record
/// applied twice would be a second row).
#[test]
fn jdbc_sink_exactly_once_survives_sigkill_on_both_databases() {
    const N: usize = 20_000;
    let (pg, my) = (Db::postgres(), Db::mariadb());
    let t = table("eos");
    for db in [&pg, &my] {
        db.exec(&format!("DROP TABLE IF EXISTS {}", db.quote(&t)));
    }
    let dir = tempfile::tempdir().unwrap();
    let topic = format!("{t}-topic");
    let kafka = DevKafka::start(dir.path(), &[&format!("{topic}:2")]);
    const INT64: &str = r#"{"type":"int64","optional":false}"#;
    let records: Vec<(Option<String>, Option<String>)> = (0..N)
        .map(|i| (None, Some(envelope(&[("seq", INT64, &i.to_string())]))))
        .collect();
    produce_keyed(&kafka.bootstrap, &topic, &records);
    let exactly_once = |db: &Db| {
        sink(
            db,
            &topic,
            &[
                ("table.name.format", &t),
                ("auto.create", "true"),
                ("batch.size", "300"),
                ("offsets.storage", "table"),
                ("offsets.table.name", &format!("{t}_offsets")),
            ],
        )
    };
    let files = vec![
        connector_file(dir.path(), "eos-pg", &exactly_once(&pg)),
        connector_file(dir.path(), "eos-my", &exactly_once(&my)),
    ];
    let rows = |db: &Db| -> i64 {
        let exists = db.count(&format!(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = '{t}'"
        ));
        if exists == 0 {
            return 0;
        }
        db.count(&format!("SELECT count(*) FROM {}", db.quote(&t)))
    };
    for threshold in [3_000, 8_000, 14_000] {
        let mut sluice = standalone_on(dir.path(), &kafka, &files);
        wait_for(&format!("{threshold} rows"), TIMEOUT, || {
            rows(&pg) >= threshold
        });
        sluice.signal(libc::SIGKILL);
        sluice.wait(Duration::from_secs(10));
    }
    let sluice = standalone_on(dir.path(), &kafka, &files);
    for db in [&pg, &my] {
        wait_for(&format!("{N} rows in {:?}", db.kind), TIMEOUT, || {
            rows(db) >= N as i64
        });
    }
    // A late double, if there were one, would land now.
    std::thread::sleep(Duration::from_secs(2));
    for db in [&pg, &my] {
        let q = |s: &str| db.quote(s);
        assert_eq!(
            rows(db),
            N as i64,
            "{:?}: each record once\n{}",
            db.kind,
            sluice.output()
        );
        assert_eq!(
            db.count(&format!(
                "SELECT count(DISTINCT {}) FROM {}",
                q("seq"),
                q(&t)
            )),
            N as i64
        );
        let stored = db.rows(&format!(
            "SELECT {}, {} FROM {} ORDER BY 1",
            q("partition"),
            q("next_offset"),
            q(&format!("{t}_offsets"))
        ));
        let total: i64 = stored
            .iter()
            .map(|r| r[1].as_deref().unwrap_or("0").parse::<i64>().unwrap())
            .sum();
        assert_eq!(
            total, N as i64,
            "{:?}: offsets stored with the rows: {stored:?}",
            db.kind
        );
        db.exec(&format!("DROP TABLE {}", q(&t)));
        db.exec(&format!("DROP TABLE {}", q(&format!("{t}_offsets"))));
    }
}

// ---------------------------------------------------------------------------------------
// JdbcSource in a cluster: tables spread over tasks, new tables picked up by a re-plan

/// Two tables on `tasks.max=3` are two tasks of one table each; a third table created later
/// is found by the connector's table monitor (`table.poll.interval.ms`), the tasks are planned
/// again (three), and its rows flow while the first tables' rows are neither lost nor read
/// twice across the re-plan.
#[test]
fn jdbc_source_spreads_tables_over_tasks_and_picks_up_a_new_table() {
    let db = Db::postgres();
    let [a, b, c] = ["spread_a", "spread_b", "spread_c"].map(table);
    for t in [&a, &b, &c] {
        db.exec(&format!("DROP TABLE IF EXISTS {t}"));
    }
    for t in [&a, &b] {
        db.exec(&format!("CREATE TABLE {t} (id SERIAL PRIMARY KEY, v TEXT)"));
        db.exec(&format!(
            "INSERT INTO {t} (v) SELECT 'x' FROM generate_series(1, 20)"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &[]);
    let controller = Controller::start(dir.path(), "127.0.0.1:0", 2.0);
    let api = Api::new(&controller.address);
    let _worker = start_worker(dir.path(), "w", &controller.url(), &kafka.bootstrap);
    wait_for("the worker to join", TIMEOUT, || api.live_workers() == 1);
    let whitelist = format!("{a},{b},{c}");
    let config = source(
        &db,
        "incrementing",
        &[
            ("incrementing.column.name", "id"),
            ("table.whitelist", &whitelist),
            ("topic.prefix", "spread-"),
            ("tasks.max", "3"),
        ],
    );
    let config: Vec<(&str, &str)> = config.iter().map(|(k, v)| (*k, v.as_str())).collect();
    api.create("spread", &config, api::TargetState::Running);
    let task_tables = || -> Vec<String> {
        let mut client = api.connectors().unwrap();
        api.runtime
            .block_on(client.list_tasks(api::ConnectorRef {
                name: "spread".into(),
            }))
            .map(|r| {
                r.into_inner()
                    .tasks
                    .iter()
                    .map(|t| t.config.get("tables").cloned().unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default()
    };
    wait_for("two tasks RUNNING", TIMEOUT, || {
        let t = tasks(&api, "spread");
        t.len() == 2 && t.values().all(|(s, _)| *s == api::State::Running)
    });
    assert_eq!(
        task_tables(),
        [
            format!(r#"[["public","{a}"]]"#),
            format!(r#"[["public","{b}"]]"#)
        ],
        "one table per task"
    );
    let topic = |t: &str| format!("spread-{t}");
    wait_records(&kafka, &topic(&a), 20);
    wait_records(&kafka, &topic(&b), 20);

    db.exec(&format!("CREATE TABLE {c} (id SERIAL PRIMARY KEY, v TEXT)"));
    db.exec(&format!(
        "INSERT INTO {c} (v) SELECT 'y' FROM generate_series(1, 15)"
    ));
    wait_for("three tasks RUNNING after the re-plan", TIMEOUT, || {
        let t = tasks(&api, "spread");
        t.len() == 3 && t.values().all(|(s, _)| *s == api::State::Running)
    });
    assert_eq!(task_tables().len(), 3);
    db.exec(&format!(
        "INSERT INTO {a} (v) SELECT 'x' FROM generate_series(1, 5)"
    ));
    wait_records(&kafka, &topic(&c), 15);
    wait_records(&kafka, &topic(&a), 25);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(ids(&kafka, &topic(&c)), (1..=15).collect::<Vec<_>>());
    assert_eq!(
        ids(&kafka, &topic(&a)),
        (1..=25).collect::<Vec<_>>(),
        "no double across the re-plan"
    );
    assert_eq!(ids(&kafka, &topic(&b)), (1..=20).collect::<Vec<_>>());
    for t in [&a, &b, &c] {
        db.exec(&format!("DROP TABLE {t}"));
    }
}

// ---------------------------------------------------------------------------------------
// A pipeline: PostgreSQL → JdbcSource → Kafka → JdbcSink → MariaDB

/// A table of PostgreSQL copied to MariaDB through Kafka: rows inserted and then updated at
/// the source (timestamp+incrementing) arrive as upserts; at the end both tables hold the same
/// rows, compared value by value.
#[test]
fn postgresql_to_kafka_to_mariadb_tables_end_equal() {
    let (pg, my) = (Db::postgres(), Db::mariadb());
    let t = table("pipeline");
    pg.exec(&format!(
        "DROP TABLE IF EXISTS {t};
         CREATE TABLE {t} (id SERIAL PRIMARY KEY, name TEXT NOT NULL, amount NUMERIC(12,2),
           day DATE, flag BOOLEAN, data BYTEA, ratio DOUBLE PRECISION,
           updated TIMESTAMP(3) NOT NULL DEFAULT now());
         INSERT INTO {t} (name, amount, day, flag, data, ratio)
           SELECT 'name ' || g, g * 1.25, DATE '2024-01-01' + g, g % 3 = 0,
             decode(lpad(to_hex(g), 8, '0'), 'hex'), g / 7.0
           FROM generate_series(1, 1000) g;"
    ));
    my.exec(&format!("DROP TABLE IF EXISTS {t}"));
    let dir = tempfile::tempdir().unwrap();
    let topic = format!("pipe-{t}");
    let kafka = DevKafka::start(dir.path(), &[&format!("{topic}:1")]);
    let files = vec![
        connector_file(
            dir.path(),
            "from-pg",
            &source(
                &pg,
                "timestamp+incrementing",
                &[
                    ("timestamp.column.name", "updated"),
                    ("incrementing.column.name", "id"),
                    ("table.whitelist", &t),
                    ("topic.prefix", "pipe-"),
                    ("batch.max.rows", "300"),
                ],
            ),
        ),
        connector_file(
            dir.path(),
            "to-mariadb",
            &sink(
                &my,
                &topic,
                &[
                    ("table.name.format", &t),
                    ("insert.mode", "upsert"),
                    ("pk.mode", "record_value"),
                    ("pk.fields", "id"),
                    ("auto.create", "true"),
                ],
            ),
        ),
    ];
    let _sluice = standalone_on(dir.path(), &kafka, &files);
    let pg_rows = || {
        pg.rows(&format!(
            "SELECT id, name, amount::text, day::text, CASE WHEN flag THEN '1' WHEN NOT flag THEN '0' END,
               encode(data, 'hex'), ratio::text, to_char(updated, 'YYYY-MM-DD HH24:MI:SS.MS')
             FROM {t} ORDER BY id"
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
            "SELECT id, name, amount, day, flag, LOWER(HEX(data)), ratio, updated FROM {t} ORDER BY id"
        ))
    };
    let normalized = |rows: Vec<Vec<Option<String>>>| -> Vec<Vec<Option<String>>> {
        // Doubles as numbers (each server prints its own shortest form).
        rows.into_iter()
            .map(|mut r| {
                if let Some(Some(v)) = r.get_mut(6) {
                    *v = format!("{:.12}", v.parse::<f64>().unwrap());
                }
                r
            })
            .collect()
    };
    wait_for("1000 rows in MariaDB", TIMEOUT, || my_rows().len() == 1000);
    pg.exec(&format!(
        "UPDATE {t} SET name = name || ' (changed)', amount = -amount, updated = now() WHERE id % 10 = 0;
         INSERT INTO {t} (name, amount, day, flag, data, ratio)
           SELECT 'later ' || g, g, DATE '2030-06-30', NULL, NULL, NULL FROM generate_series(1, 200) g;"
    ));
    let mut last = (Vec::new(), Vec::new());
    let equal = || {
        let (a, b) = (normalized(pg_rows()), normalized(my_rows()));
        let same = a == b;
        (same, a, b)
    };
    wait_for("the tables to be equal", TIMEOUT, || {
        let (same, a, b) = equal();
        last = (a, b);
        same
    });
    assert_eq!(last.0.len(), 1200);
    assert_eq!(
        last.1[9][1].as_deref(),
        Some("name 10 (changed)"),
        "updates arrive as upserts"
    );
    pg.exec(&format!("DROP TABLE {t}"));
    my.exec(&format!("DROP TABLE {t}"));
}

/// `sluice plugins check` passes JdbcSource and JdbcSink (by their Confluent class names)
/// against the real database.
#[test]
fn jdbc_classes_pass_the_conformance_kit() {
    let db = Db::postgres();
    let t = table("kit");
    db.exec(&format!(
        "DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (id SERIAL PRIMARY KEY, v TEXT);
         INSERT INTO {t} (v) SELECT 'x' FROM generate_series(1, 50)"
    ));
    let url = format!("connection.url={}", db.url);
    let whitelist = format!("table.whitelist={t}");
    let sink_table = format!("table.name.format={t}_sink");
    for (class, config) in [
        (
            "io.confluent.connect.jdbc.JdbcSourceConnector",
            vec![
                url.as_str(),
                "mode=incrementing",
                "incrementing.column.name=id",
                whitelist.as_str(),
                "topic.prefix=kit-",
                "poll.interval.ms=100",
            ],
        ),
        (
            "io.confluent.connect.jdbc.JdbcSinkConnector",
            vec![
                url.as_str(),
                "topics=kit",
                "auto.create=true",
                sink_table.as_str(),
            ],
        ),
    ] {
        let mut args = vec!["plugins", "check", "--class", class];
        for c in &config {
            args.extend(["--config", c]);
        }
        let bin = sluice_bin();
        args.extend(["--", bin.to_str().unwrap(), "connector", "jdbc"]);
        let out = std::process::Command::new(sluice_bin())
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run sluice plugins check");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{class}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(" passed, 0 failed"), "{class}:\n{stdout}");
        assert!(!stdout.contains("FAIL"), "{class}:\n{stdout}");
    }
    db.exec(&format!("DROP TABLE {t}; DROP TABLE IF EXISTS {t}_sink"));
}

/// A database that cannot be reached is a configuration error naming `connection.url` and the
/// address (never the password), before anything runs.
#[test]
fn an_unreachable_database_is_reported_by_key_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let kafka = DevKafka::start(dir.path(), &[]);
    let file = connector_file(
        dir.path(),
        "nowhere",
        &[
            (
                "connector.class",
                "io.confluent.connect.jdbc.JdbcSourceConnector".to_string(),
            ),
            (
                "connection.url",
                format!("jdbc:postgresql://127.0.0.1:{port}/test?user=u&password=s3cr3t-pw"),
            ),
            ("connection.password", "an0ther-s3cret".to_string()),
            ("mode", "bulk".to_string()),
            ("topic.prefix", "x-".to_string()),
        ],
    );
    let mut sluice = standalone_on(dir.path(), &kafka, &[file]);
    let status = sluice.wait(TIMEOUT);
    let output = sluice.output();
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(
        output.contains("connection.url")
            && output.contains(&format!(
                "could not connect to jdbc:postgresql://127.0.0.1:{port}/test"
            )),
        "{output}"
    );
    assert!(
        !output.contains("s3cr3t"),
        "a password was printed:\n{output}"
    );
}

/// Standalone mode plans again when the connector asks (Kafka Connect's
/// `requestTaskReconfiguration`): a whitelisted table created while the connector runs is
/// read, and the first table's rows are neither lost nor read twice across the re-plan.
#[test]
fn standalone_jdbc_source_picks_up_a_new_table() {
    let db = Db::postgres();
    let [a, b] = ["late_a", "late_b"].map(table);
    for t in [&a, &b] {
        db.exec(&format!("DROP TABLE IF EXISTS {t}"));
    }
    db.exec(&format!("CREATE TABLE {a} (id SERIAL PRIMARY KEY, v TEXT)"));
    db.exec(&format!(
        "INSERT INTO {a} (v) SELECT 'x' FROM generate_series(1, 10)"
    ));
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &[]);
    let whitelist = format!("{a},{b}");
    let file = connector_file(
        dir.path(),
        "late",
        &source(
            &db,
            "incrementing",
            &[
                ("incrementing.column.name", "id"),
                ("table.whitelist", &whitelist),
                ("topic.prefix", "late-"),
                ("tasks.max", "2"),
            ],
        ),
    );
    let sluice = standalone_on(dir.path(), &kafka, &[file]);
    let topic = |t: &str| format!("late-{t}");
    wait_records(&kafka, &topic(&a), 10);
    db.exec(&format!("CREATE TABLE {b} (id SERIAL PRIMARY KEY, v TEXT)"));
    db.exec(&format!(
        "INSERT INTO {b} (v) SELECT 'y' FROM generate_series(1, 7)"
    ));
    wait_records(&kafka, &topic(&b), 7);
    db.exec(&format!(
        "INSERT INTO {a} (v) SELECT 'x' FROM generate_series(1, 5)"
    ));
    wait_records(&kafka, &topic(&a), 15);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(ids(&kafka, &topic(&b)), (1..=7).collect::<Vec<_>>());
    assert_eq!(ids(&kafka, &topic(&a)), (1..=15).collect::<Vec<_>>());
    let output = sluice.output();
    assert!(
        output.contains("task configs changed: restarting the tasks"),
        "{output}"
    );
    assert!(
        output.contains("tasks=2"),
        "two tables, two tasks:\n{output}"
    );
    for t in [&a, &b] {
        db.exec(&format!("DROP TABLE {t}"));
    }
}

/// Bulk mode reads a table larger than `batch.max.rows` in pages of that size (never the
/// whole table in memory), every row once per poll interval, on both databases.
#[test]
fn jdbc_source_bulk_reads_a_big_table_in_pages_on_both_databases() {
    let dir = tempfile::tempdir().unwrap();
    let dbs = [Db::postgres(), Db::mariadb()];
    let t = table("bulkpages");
    let topics: Vec<String> = (0..dbs.len()).map(|i| format!("bulk{i}-{t}")).collect();
    let kafka = DevKafka::start(
        dir.path(),
        &topics
            .iter()
            .map(|t| format!("{t}:1"))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let mut files = Vec::new();
    for (i, db) in dbs.iter().enumerate() {
        db.exec(&format!("DROP TABLE IF EXISTS {t}"));
        db.exec(&format!(
            "CREATE TABLE {t} (id INT PRIMARY KEY, v VARCHAR(20) NOT NULL)"
        ));
        let values: Vec<String> = (1..=2500).map(|n| format!("({n}, 'v{n}')")).collect();
        db.exec(&format!("INSERT INTO {t} VALUES {}", values.join(", ")));
        files.push(connector_file(
            dir.path(),
            &format!("bulk{i}"),
            &source(
                db,
                "bulk",
                &[
                    ("table.whitelist", &t),
                    ("topic.prefix", &format!("bulk{i}-")),
                    ("batch.max.rows", "100"),
                    ("poll.interval.ms", "600000"),
                ],
            ),
        ));
    }
    let sluice = standalone_on(dir.path(), &kafka, &files);
    for topic in &topics {
        wait_records(&kafka, topic, 2500);
        let mut ids = ids(&kafka, topic);
        assert_eq!(ids.len(), 2500, "{topic}: one pass\n{}", sluice.output());
        ids.sort();
        assert_eq!(ids, (1..=2500).collect::<Vec<i64>>(), "{topic}");
    }
    for db in &dbs {
        db.exec(&format!("DROP TABLE {t}"));
    }
}
