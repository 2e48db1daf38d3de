//! HttpSink against a real HTTP server of the test's own (axum on 127.0.0.1), which records
//! every request and answers as told: records counted by sequence number in order across a
//! SIGKILL, batches as JSON arrays, the Authorization header from a PASSWORD key never
//! printed, 503/429 retried after the server's Retry-After, a 400 sent to the dead-letter
//! queue, the server going away and coming back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::cluster::{error_policy, read_all};
use crate::harness::*;
use crate::{Proxy, TIMEOUT};

/// A request the server took.
#[derive(Clone, Debug)]
struct Taken {
    at: Instant,
    method: String,
    path: String,
    authorization: Option<String>,
    /// Every request header (lower-case name, value).
    headers: Vec<(String, String)>,
    body: String,
    /// The status it was answered with.
    status: u16,
}

#[derive(Default)]
struct State {
    taken: Vec<Taken>,
    /// Answers for the next requests (status, Retry-After); 200 once empty.
    script: VecDeque<(u16, Option<&'static str>)>,
    /// What `GET /items?after=N&limit=L` pages through: `{"items": [{"id": n, ...}]}`.
    items: Vec<serde_json::Value>,
    /// OAuth2: `POST /token` hands out tokens for `TOKEN_LIFE`, and every other request needs
    /// one of them, live (else 401).
    oauth: bool,
    tokens: Vec<(String, Instant)>,
    /// Requests to `/token`: their Authorization header.
    token_requests: Vec<Option<String>>,
    /// Revoke every token after this many requests answered 200.
    revoke_after: Option<usize>,
}

/// How long a token of the test's OAuth2 server lives; the answer says so in `expires_in`.
const TOKEN_LIFE: Duration = Duration::from_secs(2);

/// An HTTP server on a thread of its own, answering every path and method.
struct Server {
    port: u16,
    state: Arc<Mutex<State>>,
}

impl Server {
    fn start() -> Server {
        use axum::extract::State as Extract;
        use axum::http::{HeaderMap, Method, StatusCode, Uri};
        let state = Arc::new(Mutex::new(State::default()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                async fn take(
                    Extract(state): Extract<Arc<Mutex<State>>>,
                    method: Method,
                    uri: Uri,
                    headers: HeaderMap,
                    body: String,
                ) -> (StatusCode, HeaderMap, String) {
                    let mut state = state.lock().unwrap();
                    let authorization = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(String::from);
                    if state.oauth && uri.path() == "/token" {
                        state.token_requests.push(authorization.clone());
                        let client = "Basic c2luay1jbGllbnQ6Y2wxZW50LXMzY3JldA==";
                        if authorization.as_deref() != Some(client)
                            || body != "grant_type=client_credentials&scope=ingest"
                        {
                            return (StatusCode::UNAUTHORIZED, HeaderMap::new(), String::new());
                        }
                        let token = format!("tok-{}", state.token_requests.len());
                        state
                            .tokens
                            .push((token.clone(), Instant::now() + TOKEN_LIFE));
                        let answer = serde_json::json!({
                            "access_token": token,
                            "token_type": "Bearer",
                            "expires_in": TOKEN_LIFE.as_secs(),
                        });
                        return (StatusCode::OK, HeaderMap::new(), answer.to_string());
                    }
                    let live = |state: &State| {
                        state.tokens.iter().any(|(t, until)| {
                            authorization.as_deref() == Some(&format!("Bearer {t}"))
                                && Instant::now() < *until
                        })
                    };
                    let (status, retry_after) = if state.oauth && !live(&state) {
                        (401, None)
                    } else if body.contains("bad") {
                        (400, None)
                    } else {
                        state.script.pop_front().unwrap_or((200, None))
                    };
                    state.taken.push(Taken {
                        at: Instant::now(),
                        method: method.to_string(),
                        path: uri.path().to_string(),
                        authorization,
                        headers: headers
                            .iter()
                            .map(|(n, v)| {
                                (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into())
                            })
                            .collect(),
                        body,
                        status,
                    });
                    let accepted = state.taken.iter().filter(|t| t.status == 200).count();
                    if state.revoke_after == Some(accepted) {
                        state.tokens.clear();
                        state.revoke_after = None;
                    }
                    let mut out = HeaderMap::new();
                    if let Some(r) = retry_after {
                        out.insert("retry-after", r.parse().unwrap());
                    }
                    let mut text = if status == 400 {
                        "no bad records here"
                    } else {
                        ""
                    }
                    .to_string();
                    if status == 200 && method == Method::GET && uri.path() == "/items" {
                        let query: std::collections::HashMap<String, String> = uri
                            .query()
                            .unwrap_or("")
                            .split('&')
                            .filter_map(|p| p.split_once('='))
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect();
                        let after: i64 = query
                            .get("after")
                            .and_then(|a| a.parse().ok())
                            .unwrap_or(-1);
                        let limit: usize = query
                            .get("limit")
                            .and_then(|l| l.parse().ok())
                            .unwrap_or(100);
                        let page: Vec<&serde_json::Value> = state
                            .items
                            .iter()
                            .filter(|i| i["id"].as_i64().unwrap() > after)
                            .take(limit)
                            .collect();
                        text = serde_json::json!({ "items": page }).to_string();
                        out.insert("x-page-after", after.to_string().parse().unwrap());
                        out.insert("x-not-forwarded", "1".parse().unwrap());
                    }
                    (StatusCode::from_u16(status).unwrap(), out, text)
                }
                let app = axum::Router::new().fallback(take).with_state(shared);
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        Server { port, state }
    }

    fn taken(&self) -> Vec<Taken> {
        self.state.lock().unwrap().taken.clone()
    }

    /// The sequence numbers of the records refused (in a request answered 400), each once.
    fn refused(&self) -> Vec<u64> {
        let set: std::collections::BTreeSet<u64> = self
            .taken()
            .iter()
            .filter(|t| t.status == 400)
            .flat_map(|t| seqs(&t.body))
            .collect();
        set.into_iter().collect()
    }

    /// The sequence numbers of the records accepted (answered 200), in arrival order.
    fn accepted(&self) -> Vec<u64> {
        self.taken()
            .iter()
            .filter(|t| t.status == 200)
            .flat_map(|t| seqs(&t.body))
            .collect()
    }
}

/// The `seq` of each JSON object in a body: an array of them, or one.
fn seqs(body: &str) -> Vec<u64> {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(serde_json::Value::Array(items)) => {
            items.iter().filter_map(|v| v["seq"].as_u64()).collect()
        }
        Ok(v) => v["seq"].as_u64().into_iter().collect(),
        Err(_) => Vec::new(),
    }
}

fn produce_json(bootstrap: &str, topic: &str, range: std::ops::Range<u64>) {
    let values: Vec<String> = range
        .map(|seq| {
            if seq == 777 {
                format!(r#"{{"seq":{seq},"text":"bad"}}"#)
            } else {
                format!(r#"{{"seq":{seq},"text":"ok"}}"#)
            }
        })
        .collect();
    crate::harness::cluster::produce(bootstrap, topic, &values);
}

fn sink_config(port: u16, topic: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "connector.class",
            "io.confluent.connect.http.HttpSinkConnector".into(),
        ),
        ("topics", topic.into()),
        (
            "http.api.url",
            format!("http://127.0.0.1:{port}/ingest/${{topic}}"),
        ),
        (
            "value.converter",
            "org.apache.kafka.connect.json.JsonConverter".into(),
        ),
        ("value.converter.schemas.enable", "false".into()),
    ]
}

/// Every record's first arrival in order of its sequence number, none missing but `missing`;
/// returns the duplicates.
fn check_in_order(accepted: &[u64], count: u64, missing: &[u64]) -> usize {
    let mut first = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for s in accepted {
        if seen.insert(*s) {
            first.push(*s);
        }
    }
    let expected: Vec<u64> = (0..count).filter(|s| !missing.contains(s)).collect();
    assert_eq!(first, expected, "records lost or out of order");
    accepted.len() - first.len()
}

/// HttpSink POSTs 8,000 records in JSON arrays of up to 100 to a URL naming the topic, with
/// the Authorization header from `http.headers.authorization` (a PASSWORD: the token appears
/// in no output), its process SIGKILLed midway: every record arrives, in order (duplicates
/// only after the kill), but those of the request the server refuses with 400 (it holds a
/// bad record): they go to the dead-letter queue with the status and the server's answer.
#[test]
fn http_sink_posts_every_record_in_order_across_a_kill() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["to-http:1", "http-dlq:1"]);
    produce_json(&kafka.bootstrap, "to-http", 0..4000);
    let mut config = sink_config(server.port, "to-http");
    config.extend([
        ("batch.max.size", "100".to_string()),
        ("batch.json.as.array", "true".into()),
        ("http.headers.authorization", "Bearer s3cr3t-t0ken".into()),
    ]);
    config.extend(error_policy("all", "http-dlq"));
    let sink = connector_file(dir.path(), "hsink", &config);
    let sluice = standalone_on(dir.path(), &kafka, &[sink]);
    wait_for("the first records", TIMEOUT, || {
        server.accepted().len() >= 1000
    });
    let pid = sluice.connector_pid("hsink").expect("the sink's process");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    produce_json(&kafka.bootstrap, "to-http", 4000..8000);
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("every record", TIMEOUT, || {
            server.accepted().contains(&7999)
        })
    }));
    if let Err(panic) = waited {
        let taken = server.taken();
        let accepted = server.accepted();
        eprintln!(
            "{} requests, statuses {:?}, {} accepted, last {:?}\n{}",
            taken.len(),
            taken
                .iter()
                .map(|t| t.status)
                .collect::<std::collections::BTreeSet<_>>(),
            accepted.len(),
            accepted.last(),
            sluice.output()
        );
        std::panic::resume_unwind(panic);
    }
    // The request holding 777 was refused whole: its records are the ones missing.
    let refused = server.refused();
    assert!(refused.contains(&777), "{refused:?}");
    let duplicates = check_in_order(&server.accepted(), 8000, &refused);
    let taken = server.taken();
    assert!(taken
        .iter()
        .all(|t| t.method == "POST" && t.path == "/ingest/to-http"));
    assert!(taken
        .iter()
        .all(|t| t.authorization.as_deref() == Some("Bearer s3cr3t-t0ken")));
    assert!(taken.iter().all(|t| seqs(&t.body).len() <= 100));
    println!(
        "8000 records in {} requests, {duplicates} sent twice after the kill",
        taken.len()
    );
    wait_for(
        "the refused record in the dead-letter queue",
        TIMEOUT,
        || !read_all(&kafka.bootstrap, "http-dlq").is_empty(),
    );
    let dlq = read_all(&kafka.bootstrap, "http-dlq");
    let reason = dlq[0].3.values().cloned().collect::<Vec<_>>().join(" ");
    assert!(
        reason.contains("400") && reason.contains("no bad records here"),
        "{reason}"
    );
    assert!(!sluice.output().contains("s3cr3t"), "the token was printed");
    drop(sluice);
}

/// The server answers 503 with `Retry-After: 1` twice, then 429 with none: the sink waits the
/// second the server asks for, backs off on its own after the 429, and the records arrive
/// once each, in order, without a task restart.
#[test]
fn http_sink_retries_503_and_429_honouring_retry_after() {
    let server = Server::start();
    {
        let mut state = server.state.lock().unwrap();
        state
            .script
            .extend([(503, Some("1")), (503, Some("1")), (429, None)]);
    }
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["retry-http:1", "retry-dlq:1"]);
    produce_json(&kafka.bootstrap, "retry-http", 0..200);
    let mut config = sink_config(server.port, "retry-http");
    config.extend([
        ("batch.max.size", "50".to_string()),
        ("batch.json.as.array", "true".into()),
        ("retry.backoff.ms", "100".into()),
    ]);
    config.extend(error_policy("all", "retry-dlq"));
    let sink = connector_file(dir.path(), "rsink", &config);
    let sluice = standalone_on(dir.path(), &kafka, &[sink]);
    wait_for("every record", TIMEOUT, || server.accepted().len() >= 199);
    let taken = server.taken();
    assert_eq!(
        taken.iter().take(4).map(|t| t.status).collect::<Vec<_>>(),
        [503, 503, 429, 200]
    );
    let gap = |i: usize| taken[i + 1].at.duration_since(taken[i].at);
    assert!(gap(0) >= Duration::from_millis(950), "{:?}", gap(0));
    assert!(gap(1) >= Duration::from_millis(950), "{:?}", gap(1));
    assert!(gap(2) < Duration::from_millis(900), "{:?}", gap(2));
    assert_eq!(check_in_order(&server.accepted(), 200, &[]), 0);
    assert!(
        !sluice
            .output()
            .lines()
            .any(|l| l.contains("connector=rsink") && l.contains("restart 1 of")),
        "the task restarted"
    );
    drop(sluice);
}

/// The server goes away (a proxy in front of it closes every connection and refuses new ones)
/// while records keep coming: the task gives up after its retries, the worker restarts it
/// with backoff, and once the server is back every record arrives, in order.
#[test]
fn http_sink_recovers_when_the_server_goes_away_and_comes_back() {
    let server = Server::start();
    let proxy = Proxy::start(&format!("127.0.0.1:{}", server.port));
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["flaky-http:1", "flaky-dlq:1"]);
    let mut config = sink_config(proxy.port, "flaky-http");
    config.extend([
        ("batch.max.size", "20".to_string()),
        ("batch.json.as.array", "true".into()),
        ("max.retries", "1".into()),
        ("retry.backoff.ms", "100".into()),
        ("restart.backoff.initial.ms", "200".into()),
    ]);
    config.extend(error_policy("all", "flaky-dlq"));
    let sink = connector_file(dir.path(), "fsink", &config);
    let mut sluice = standalone_on(dir.path(), &kafka, &[sink]);
    produce_json(&kafka.bootstrap, "flaky-http", 0..500);
    wait_for("the first records", TIMEOUT, || {
        server.accepted().len() >= 499
    });
    proxy.cut();
    produce_json(&kafka.bootstrap, "flaky-http", 500..1000);
    wait_for(
        "the task failing and restarting while the server is gone",
        TIMEOUT,
        || {
            sluice
                .output()
                .lines()
                .any(|l| l.contains("connector=fsink") && l.contains("restart 2 of"))
        },
    );
    proxy.restore();
    produce_json(&kafka.bootstrap, "flaky-http", 1000..1500);
    wait_for("every record after the outage", TIMEOUT, || {
        server.accepted().contains(&1499)
    });
    check_in_order(&server.accepted(), 1500, &server.refused());
    sluice.stop_cleanly();
}

/// Produces `range` to `topic` as JSON values with headers `trace-id: t<seq / 10>`,
/// `tenant: acme` and `internal: x`; record 55's trace-id holds a line break.
fn produce_with_headers(bootstrap: &str, topic: &str, range: std::ops::Range<u64>) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    for seq in range {
        let value = format!(r#"{{"seq":{seq},"text":"ok"}}"#);
        let trace = if seq == 55 {
            "t5\r\nInjected: yes".to_string()
        } else {
            format!("t{}", seq / 10)
        };
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "trace-id",
                value: Some(trace.as_str()),
            })
            .insert(Header {
                key: "tenant",
                value: Some("acme"),
            })
            .insert(Header {
                key: "internal",
                value: Some("x"),
            });
        producer
            .send(
                BaseRecord::<(), _>::to(topic)
                    .payload(&value)
                    .headers(headers),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// HttpSink forwards the Kafka headers named in `http.headers.forward` as HTTP headers under
/// `http.headers.forward.prefix`: every request carries its records' trace-id and tenant (and
/// not the header left out), records of different trace-ids never share a request, and the
/// record whose header HTTP cannot carry (a line break) goes to the dead-letter queue naming
/// the header, the others all arriving in order.
#[test]
fn http_sink_forwards_kafka_headers_as_http_headers() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["headers-to-http:1", "headers-dlq:1"]);
    produce_with_headers(&kafka.bootstrap, "headers-to-http", 0..500);
    let mut config = sink_config(server.port, "headers-to-http");
    config.extend([
        ("batch.max.size", "100".to_string()),
        ("batch.json.as.array", "true".into()),
        ("http.headers.forward", "trace-id, tenant".into()),
        ("http.headers.forward.prefix", "X-Kafka-".into()),
    ]);
    config.extend(error_policy("all", "headers-dlq"));
    let sink = connector_file(dir.path(), "hheaders", &config);
    let sluice = standalone_on(dir.path(), &kafka, &[sink]);
    wait_for("every record", TIMEOUT, || server.accepted().contains(&499));
    let duplicates = check_in_order(&server.accepted(), 500, &[55]);
    assert_eq!(duplicates, 0);
    for t in server.taken() {
        let header = |name: &str| {
            t.headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(header("x-kafka-tenant"), ["acme"], "{:?}", t.headers);
        assert!(header("x-kafka-internal").is_empty() && header("internal").is_empty());
        assert!(header("injected").is_empty(), "a header was injected");
        let trace = header("x-kafka-trace-id");
        let seqs = seqs(&t.body);
        assert!(!seqs.is_empty());
        for seq in &seqs {
            assert_eq!(trace, [format!("t{}", seq / 10)], "record {seq}");
        }
    }
    wait_for("record 55 in the dead-letter queue", TIMEOUT, || {
        !read_all(&kafka.bootstrap, "headers-dlq").is_empty()
    });
    let dlq = read_all(&kafka.bootstrap, "headers-dlq");
    assert_eq!(dlq.len(), 1);
    let reason = dlq[0].3.values().cloned().collect::<Vec<_>>().join(" ");
    assert!(reason.contains("trace-id"), "{reason}");
    drop(sluice);
}

/// `auth.type=OAUTH2`: HttpSink takes a token from the test's token endpoint (client
/// credentials in a Basic header, the scope asked for), sends it as a Bearer token, fetches a
/// new one when the server revokes them all (one 401, the request sent again) and before the
/// token expires (no 401 for that): 600 records arrive once each, in order; the client secret
/// appears in no output.
#[test]
fn http_sink_authenticates_with_oauth2_client_credentials() {
    let server = Server::start();
    {
        let mut state = server.state.lock().unwrap();
        state.oauth = true;
        state.revoke_after = Some(5);
    }
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["oauth-to-http:1"]);
    produce_json(&kafka.bootstrap, "oauth-to-http", 0..300);
    let mut config = sink_config(server.port, "oauth-to-http");
    config.extend([
        ("batch.max.size", "20".to_string()),
        ("batch.json.as.array", "true".into()),
        ("auth.type", "OAUTH2".into()),
        (
            "oauth2.token.url",
            format!("http://127.0.0.1:{}/token", server.port),
        ),
        ("oauth2.client.id", "sink-client".into()),
        ("oauth2.client.secret", "cl1ent-s3cret".into()),
        ("oauth2.client.scope", "ingest".into()),
    ]);
    let sink = connector_file(dir.path(), "hoauth", &config);
    let sluice = standalone_on(dir.path(), &kafka, &[sink]);
    wait_for("the first 300 records", TIMEOUT, || {
        server.accepted().contains(&299)
    });
    // Past the first tokens' life: the next requests need a new one.
    std::thread::sleep(TOKEN_LIFE + Duration::from_millis(500));
    produce_json(&kafka.bootstrap, "oauth-to-http", 300..600);
    wait_for("every record", TIMEOUT, || server.accepted().contains(&599));
    let duplicates = check_in_order(&server.accepted(), 600, &[]);
    assert_eq!(duplicates, 0);
    let taken = server.taken();
    let refused = taken.iter().filter(|t| t.status == 401).count();
    assert_eq!(refused, 1, "one 401, after the revocation");
    assert!(taken.iter().filter(|t| t.status == 200).all(|t| t
        .authorization
        .as_deref()
        .is_some_and(|a| a.starts_with("Bearer tok-"))));
    let token_requests = server.state.lock().unwrap().token_requests.clone();
    assert!(
        token_requests.len() >= 3,
        "a token at the start, after the revocation and before expiry: {token_requests:?}"
    );
    let output = sluice.output();
    assert!(
        !output.contains("cl1ent-s3cret"),
        "the client secret was printed"
    );
    assert!(
        !output.contains("c2luay1jbGllbnQ6"),
        "the client's Basic header was printed"
    );
    drop(sluice);
}

fn add_items(server: &Server, range: std::ops::Range<u64>) {
    let mut state = server.state.lock().unwrap();
    state
        .items
        .extend(range.map(|seq| serde_json::json!({ "id": seq, "seq": seq, "text": "item" })));
}

/// HttpSource pages through an endpoint with its cursor (the last item's `id`) in the query,
/// its process SIGKILLed midway and the endpoint answering 503 once after: every item reaches
/// Kafka in order, the restarted task resumes from the committed cursor (a few duplicates,
/// not the whole history again), with no restart by hand.
#[test]
fn http_source_pages_with_a_cursor_across_a_kill() {
    let server = Server::start();
    add_items(&server, 0..2000);
    let dir = tempfile::tempdir().unwrap();
    let kafka = DevKafka::start(dir.path(), &["from-http:1"]);
    let config = vec![
        (
            "connector.class",
            "com.github.castorm.kafka.connect.http.HttpSourceConnector".to_string(),
        ),
        (
            "http.request.url",
            format!("http://127.0.0.1:{}/items", server.port),
        ),
        ("http.request.params", "after=${offset}&limit=50".into()),
        ("http.response.list.pointer", "/items".into()),
        ("http.response.record.offset.pointer", "/id".into()),
        ("http.response.record.key.pointer", "/id".into()),
        ("http.offset.initial", "-1".into()),
        ("http.timer.interval.millis", "200".into()),
        ("kafka.topic", "from-http".into()),
        ("http.response.headers.forward", "X-Page-After".into()),
        ("tasks.max", "3".into()),
        ("restart.backoff.initial.ms", "200".into()),
        (
            "value.converter",
            "org.apache.kafka.connect.storage.StringConverter".into(),
        ),
    ];
    let source = connector_file(dir.path(), "hsource", &config);
    let sluice = standalone_on(dir.path(), &kafka, &[source]);
    let seqs = || -> Vec<u64> {
        read_all(&kafka.bootstrap, "from-http")
            .iter()
            .filter_map(|r| r.2.as_ref())
            .map(|v| {
                serde_json::from_slice::<serde_json::Value>(v).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    wait_for("the first items in Kafka", TIMEOUT, || seqs().len() >= 1000);
    // Committed every 500 ms: the kill leaves at most the last moment's items uncommitted.
    std::thread::sleep(Duration::from_secs(1));
    let pid = sluice
        .connector_pid("hsource")
        .expect("the source's process");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    add_items(&server, 2000..3000);
    server.state.lock().unwrap().script.push_back((503, None));
    wait_for("every item in Kafka", TIMEOUT, || seqs().contains(&2999));
    let got = seqs();
    let duplicates = check_in_order(&got, 3000, &[]);
    println!("3000 items, {duplicates} twice after the kill");
    // Each record carries the answer's x-page-after (the cursor its page was asked after),
    // and only that header.
    for (_, _, value, headers) in read_all(&kafka.bootstrap, "from-http") {
        let id = serde_json::from_slice::<serde_json::Value>(&value.unwrap()).unwrap()["id"]
            .as_i64()
            .unwrap();
        let after: i64 = headers["x-page-after"].parse().unwrap();
        assert!(
            after < id && id - after <= 50,
            "item {id} on the page after {after}"
        );
        assert_eq!(headers.len(), 1, "{headers:?}");
    }
    assert!(
        duplicates < 1000,
        "the task started over: {duplicates} duplicates"
    );
    let taken = server.taken();
    assert!(taken.iter().any(|t| t.status == 503));
    drop(sluice);
}

/// HttpSink and HttpSource pass the conformance kit.
#[test]
fn http_connectors_pass_the_conformance_kit() {
    let server = Server::start();
    add_items(&server, 0..20);
    let (ok, text) = plugins_check("HttpSink", &sink_config(server.port, "kit"), "http");
    assert!(ok, "{text}");
    assert!(text.contains(" passed, 0 failed"), "{text}");
    let source = vec![
        (
            "http.request.url",
            format!("http://127.0.0.1:{}/items", server.port),
        ),
        ("http.request.params", "after=${offset}".to_string()),
        ("http.response.list.pointer", "/items".into()),
        ("http.response.record.offset.pointer", "/id".into()),
        ("http.offset.initial", "-1".into()),
        ("kafka.topic", "kit".into()),
    ];
    let (ok, text) = plugins_check("HttpSource", &source, "http");
    assert!(ok, "{text}");
    assert!(text.contains(" passed, 0 failed"), "{text}");
}
