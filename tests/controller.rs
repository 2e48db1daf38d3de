//! The controller as a real process: the public API driven through the real grpcurl binary,
//! a worker joining over the real worker protocol, error codes, and recovery after SIGKILL.

mod harness;

use std::path::Path;
use std::time::Duration;

use harness::{grpcurl, Controller, Sluice};
use sluice_proto::api::v1 as api;
use sluice_proto::cluster::v1::{self as wire, worker_control_client::WorkerControlClient};

const TIMEOUT: Duration = Duration::from_secs(20);

fn start_controller(dir: &Path) -> (Sluice, String) {
    let controller = Controller::start(dir, "127.0.0.1:0", 5.0);
    (controller.process, controller.address)
}

/// The first assignment on the stream that satisfies `wanted`, within the timeout.
async fn next_assignment(
    stream: &mut tonic::Streaming<wire::Assignment>,
    wanted: impl Fn(&wire::Assignment) -> bool,
) -> wire::Assignment {
    loop {
        let a = tokio::time::timeout(TIMEOUT, stream.message())
            .await
            .expect("an assignment within the timeout")
            .expect("assignment stream healthy")
            .expect("assignment stream open");
        if wanted(&a) {
            return a;
        }
    }
}

fn sink_plugin() -> wire::PluginClass {
    wire::PluginClass {
        class_name: "FileStreamSink".into(),
        aliases: vec!["org.apache.kafka.connect.file.FileStreamSinkConnector".into()],
        r#type: api::ConnectorType::Sink as i32,
        version: "test".into(),
        configs: vec![api::ConfigKey {
            name: "file".into(),
            r#type: "STRING".into(),
            required: true,
            ..Default::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_through_grpcurl_with_a_worker_and_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let (mut controller, address) = start_controller(dir.path());

    // Reflection lists the services; health answers.
    let (ok, listed) = grpcurl(&address, "", None);
    assert!(ok, "{listed}");
    for service in [
        "sluice.api.v1.ConnectorService",
        "sluice.api.v1.PluginService",
        "grpc.health.v1.Health",
    ] {
        assert!(listed.contains(service), "{listed}");
    }
    let (ok, health) = grpcurl(&address, "grpc.health.v1.Health/Check", None);
    assert!(ok && health.contains("SERVING"), "{health}");

    // No worker yet: a connector class cannot be checked, so creation is UNAVAILABLE.
    let (ok, out) = grpcurl(
        &address,
        "sluice.api.v1.ConnectorService/CreateConnector",
        Some(
            r#"{"name":"early","config":{"connector.class":"FileStreamSink","topics":"t","file":"x"}}"#,
        ),
    );
    assert!(!ok && out.contains("Unavailable"), "{out}");

    // A worker joins over the worker protocol and gets its (empty) assignment.
    let mut worker = WorkerControlClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let mut assignments = worker
        .join(wire::JoinRequest {
            worker_id: "w1".into(),
            plugins: vec![sink_plugin()],
            capacity: 0,
            version: "test".into(),
            broken_plugins: Vec::new(),
            // As a worker from before deltas: every assignment comes whole.
            accepts_deltas: false,
        })
        .await
        .unwrap()
        .into_inner();

    // Create through grpcurl.
    let create = r#"{"name":"sink","config":{"connector.class":"FileStreamSink","topics":"t","file":"/tmp/out.txt","tasks.max":"2"}}"#;
    let (ok, out) = grpcurl(
        &address,
        "sluice.api.v1.ConnectorService/CreateConnector",
        Some(create),
    );
    assert!(ok, "{out}");

    // The worker is asked to plan it, submits two task configs, then gets the tasks.
    let planning = next_assignment(&mut assignments, |a| !a.planning.is_empty()).await;
    assert_eq!(planning.planning, ["sink"]);
    let version = planning.connectors[0].config_version;
    let accepted = worker
        .submit_task_configs(wire::SubmitTaskConfigsRequest {
            worker_id: "w1".into(),
            connector: "sink".into(),
            config_version: version,
            tasks: vec![wire::TaskConfig::default(), wire::TaskConfig::default()],
            r#type: api::ConnectorType::Sink as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .accepted;
    assert!(accepted);
    let with_tasks = next_assignment(&mut assignments, |a| a.tasks.len() == 2).await;
    assert!(with_tasks.generation > planning.generation);
    let running = |task: Option<u32>| wire::UnitStatus {
        connector: "sink".into(),
        task,
        state: api::State::Running as i32,
        trace: String::new(),
        topics: task.map(|t| vec![format!("t{t}")]).unwrap_or_default(),
    };
    worker
        .report_status(wire::StatusReport {
            released: Vec::new(),
            worker_id: "w1".into(),
            generation: with_tasks.generation,
            full: true,
            statuses: vec![running(None), running(Some(0)), running(Some(1))],
        })
        .await
        .unwrap();

    // Status through grpcurl: connector and both tasks RUNNING on w1.
    let (ok, status) = grpcurl(
        &address,
        "sluice.api.v1.ConnectorService/GetConnectorStatus",
        Some(r#"{"name":"sink"}"#),
    );
    assert!(ok, "{status}");
    assert_eq!(status.matches("\"STATE_RUNNING\"").count(), 3, "{status}");
    assert!(status.contains("\"w1\""), "{status}");

    // Topics the tasks reported, then reset.
    let (ok, topics) = grpcurl(
        &address,
        "sluice.api.v1.ConnectorService/GetConnectorTopics",
        Some(r#"{"name":"sink"}"#),
    );
    assert!(
        ok && topics.contains("\"t0\"") && topics.contains("\"t1\""),
        "{topics}"
    );
    let (ok, topics) = grpcurl(
        &address,
        "sluice.api.v1.ConnectorService/ResetConnectorTopics",
        Some(r#"{"name":"sink"}"#),
    );
    assert!(ok && !topics.contains("\"t0\""), "{topics}");

    // Pause and resume change the target state pushed to the worker.
    let (ok, paused) = grpcurl(
        &address,
        "sluice.api.v1.ConnectorService/PauseConnector",
        Some(r#"{"name":"sink"}"#),
    );
    assert!(ok && paused.contains("TARGET_STATE_PAUSED"), "{paused}");
    next_assignment(&mut assignments, |a| {
        a.connectors
            .iter()
            .any(|c| c.target_state == api::TargetState::Paused as i32)
    })
    .await;
    let (ok, resumed) = grpcurl(
        &address,
        "sluice.api.v1.ConnectorService/ResumeConnector",
        Some(r#"{"name":"sink"}"#),
    );
    assert!(ok && resumed.contains("TARGET_STATE_RUNNING"), "{resumed}");

    // Error codes.
    let (ok, out) = grpcurl(
        &address,
        "sluice.api.v1.ConnectorService/CreateConnector",
        Some(create),
    );
    assert!(!ok && out.contains("AlreadyExists"), "{out}");
    let (ok, out) = grpcurl(
        &address,
        "sluice.api.v1.ConnectorService/CreateConnector",
        Some(r#"{"name":"bad","config":{"connector.class":"FileStreamSink","tasks.max":"zero"}}"#),
    );
    assert!(!ok && out.contains("InvalidArgument"), "{out}");
    for field in ["tasks.max", "topics", "file"] {
        assert!(out.contains(field), "no violation for {field}: {out}");
    }
    let (ok, out) = grpcurl(
        &address,
        "sluice.api.v1.ConnectorService/GetConnector",
        Some(r#"{"name":"nope"}"#),
    );
    assert!(!ok && out.contains("NotFound"), "{out}");
    let (ok, out) = grpcurl(
        &address,
        "sluice.api.v1.ConnectorService/CreateConnector",
        Some(r#"{"name":"x","config":{"connector.class":"NoSuchConnector"}}"#),
    );
    assert!(
        !ok && out.contains("InvalidArgument") && out.contains("connector.class"),
        "{out}"
    );

    // Per-field violations reach generated clients as google.rpc.BadRequest details.
    let mut client =
        sluice_proto::api::v1::connector_service_client::ConnectorServiceClient::connect(format!(
            "http://{address}"
        ))
        .await
        .unwrap();
    let status = client
        .create_connector(api::CreateConnectorRequest {
            name: "bad".into(),
            config: [("connector.class".to_string(), "FileStreamSink".to_string())].into(),
            initial_state: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let details = tonic_types::StatusExt::get_error_details(&status);
    let fields: Vec<String> = details
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["topics", "file"]);

    // A second connector, then SIGKILL the controller and restart it on the same data.
    let (ok, out) = grpcurl(
        &address,
        "sluice.api.v1.ConnectorService/CreateConnector",
        Some(
            r#"{"name":"kept","config":{"connector.class":"FileStreamSink","topics":"k","file":"/tmp/k.txt"},"initial_state":"TARGET_STATE_STOPPED"}"#,
        ),
    );
    assert!(ok, "{out}");
    let (ok, out) = grpcurl(
        &address,
        "sluice.api.v1.ConnectorService/DeleteConnector",
        Some(r#"{"name":"sink"}"#),
    );
    assert!(ok, "{out}");
    controller.signal(libc::SIGKILL);
    controller.wait(TIMEOUT);
    let (_controller, address) = start_controller(dir.path());
    let (ok, out) = grpcurl(
        &address,
        "sluice.api.v1.ConnectorService/GetConnectorStatus",
        Some(r#"{"name":"kept"}"#),
    );
    assert!(
        ok && out.contains("\"TARGET_STATE_STOPPED\"") && out.contains("\"STATE_STOPPED\""),
        "{out}"
    );
    let (ok, out) = grpcurl(
        &address,
        "sluice.api.v1.ConnectorService/GetConnector",
        Some(r#"{"name":"sink"}"#),
    );
    assert!(!ok && out.contains("NotFound"), "{out}");
}

/// A dry run through grpcurl and through the CLI: a connector file's transforms and converters
/// applied to sample records, each step shown, a failing step named; nothing needs a worker.
#[test]
fn dry_run_shows_each_step_through_grpcurl_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (_controller, address) = start_controller(dir.path());
    let body = r#"{
        "config": {
            "connector.class": "FileStreamSource",
            "transforms": "hoist,cast,route",
            "transforms.hoist.type": "org.apache.kafka.connect.transforms.HoistField$Value",
            "transforms.hoist.field": "n",
            "transforms.cast.type": "org.apache.kafka.connect.transforms.Cast$Value",
            "transforms.cast.spec": "n:int32",
            "transforms.route.type": "org.apache.kafka.connect.transforms.RegexRouter",
            "transforms.route.regex": "(.*)",
            "transforms.route.replacement": "$1-numbers",
            "value.converter.schemas.enable": "false"
        },
        "direction": "CONNECTOR_TYPE_SOURCE",
        "records": [
            {"topic": "t", "value": "{\"schema\":{\"type\":\"string\",\"optional\":false},\"payload\":\"42\"}"},
            {"topic": "t", "value": "{\"schema\":{\"type\":\"string\",\"optional\":false},\"payload\":\"x\"}"}
        ]
    }"#;
    let (ok, out) = grpcurl(
        &address,
        "sluice.api.v1.ConnectorService/DryRun",
        Some(body),
    );
    assert!(ok, "{out}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results[0]["output"]["topic"], "t-numbers");
    assert_eq!(results[0]["output"]["value"], r#"{"n":42}"#);
    let stages: Vec<&str> = results[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "TRANSFORMATION",
            "TRANSFORMATION",
            "TRANSFORMATION",
            "KEY_CONVERTER",
            "VALUE_CONVERTER"
        ]
    );
    assert!(
        results[1]["error"]
            .as_str()
            .unwrap()
            .contains("transform cast (org.apache.kafka.connect.transforms.Cast$Value)"),
        "{out}"
    );
    // A bad transform key is an InvalidArgument naming it.
    let (ok, out) = grpcurl(
        &address,
        "sluice.api.v1.ConnectorService/DryRun",
        Some(
            r#"{"config":{"transforms":"a","transforms.a.type":"Cast$Value"},"direction":"CONNECTOR_TYPE_SINK"}"#,
        ),
    );
    assert!(!ok && out.contains("transforms.a.spec"), "{out}");

    // The CLI: a properties file and JSON-lines samples, sink direction.
    std::fs::write(
        dir.path().join("sink.properties"),
        "name=s\nconnector.class=FileStreamSink\ntopics=t\nfile=out.txt\n\
         value.converter.schemas.enable=false\n\
         transforms=drop,extract\n\
         transforms.drop.type=org.apache.kafka.connect.transforms.Filter\n\
         transforms.drop.predicate=isTombstone\n\
         transforms.extract.type=org.apache.kafka.connect.transforms.ExtractField$Value\n\
         transforms.extract.field=name\n\
         predicates=isTombstone\n\
         predicates.isTombstone.type=org.apache.kafka.connect.transforms.predicates.RecordIsTombstone\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("samples.jsonl"),
        "{\"topic\":\"t\",\"value\":{\"name\":\"ada\",\"id\":1}}\n{\"topic\":\"t\",\"value\":null}\n",
    )
    .unwrap();
    let url = format!("http://{address}");
    let (code, stdout, stderr) = harness::cluster::connectors_cli(
        dir.path(),
        &url,
        &[
            "dry-run",
            "--file",
            "sink.properties",
            "--records",
            "samples.jsonl",
            "--direction",
            "sink",
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("record 1:")
            && stdout.contains(
                "=> topic=t partition=0 key=null value={\"schema\":null,\"payload\":\"ada\"}"
            ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "TRANSFORMATION drop (org.apache.kafka.connect.transforms.Filter): skipped (predicate)"
        ),
        "{stdout}"
    );
    let second = stdout.split("record 2:").nth(1).unwrap_or_default();
    assert!(second.contains("=> dropped"), "{stdout}");
}
