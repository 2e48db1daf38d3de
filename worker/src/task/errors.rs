//! Record-level error handling with Kafka Connect's keys and semantics: `errors.tolerance`,
//! retries of retriable failures with exponential backoff (`errors.retry.timeout`,
//! `errors.retry.delay.max.ms`), logging (`errors.log.enable`, `errors.log.include.messages`)
//! and a dead-letter queue (`errors.deadletterqueue.*`) whose records carry Kafka Connect's
//! `__connect.errors.*` context headers. Unlike Kafka Connect, source connectors get a
//! dead-letter queue too.

use std::fmt::Display;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use sluice_model::ErrorPolicy;

use crate::restart::Fatal;

/// How long a dead-letter write may take before the task fails.
const DLQ_TIMEOUT: Duration = Duration::from_secs(30);

/// Kafka Connect's exception class for a record a connector reported.
pub const CONNECT_EXCEPTION: &str = "org.apache.kafka.connect.errors.ConnectException";

/// Where in the pipeline a record failed: Kafka Connect's stage names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    KeyConverter,
    ValueConverter,
    HeaderConverter,
    Transformation,
    TaskPut,
    TaskPoll,
    KafkaProduce,
    KafkaConsume,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::KeyConverter => "KEY_CONVERTER",
            Stage::ValueConverter => "VALUE_CONVERTER",
            Stage::HeaderConverter => "HEADER_CONVERTER",
            Stage::Transformation => "TRANSFORMATION",
            Stage::TaskPut => "TASK_PUT",
            Stage::TaskPoll => "TASK_POLL",
            Stage::KafkaProduce => "KAFKA_PRODUCE",
            Stage::KafkaConsume => "KAFKA_CONSUME",
        }
    }
}

/// A record that failed, as far as it is known: a sink record has its Kafka coordinates and
/// original bytes; a source record its intended topic and a best-effort rendering.
#[derive(Debug, Default, Clone)]
pub struct FailedRecord {
    pub topic: String,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// What failed: the stage, the class that ran it and the error, for the log and the headers.
pub struct Failure<'a> {
    pub stage: Stage,
    /// The executing class (a converter's Kafka Connect class name, the connector class).
    pub class: &'a str,
    /// Kafka Connect's exception class for this kind of failure.
    pub exception: &'a str,
    pub error: &'a (dyn Display + Sync),
    /// The failure may pass (a schema registry away) and outlasted `errors.retry.timeout`:
    /// with `errors.tolerance=none` the task fails but may be restarted.
    pub retriable: bool,
}

impl<'a> Failure<'a> {
    /// A record the connector itself reported as bad, in `stage`.
    pub fn reported(stage: Stage, class: &'a str, error: &'a (dyn Display + Sync)) -> Failure<'a> {
        Failure {
            stage,
            class,
            exception: CONNECT_EXCEPTION,
            error,
            retriable: false,
        }
    }
}

/// The text of a connector's report of a bad record: its message, then its trace.
pub fn report_text(e: &sluice_proto::connector::v1::RecordError) -> String {
    if e.trace.is_empty() {
        e.message.clone()
    } else {
        format!("{}\n{}", e.message, e.trace)
    }
}

/// Applies a connector's error policy to failed records of one task.
pub struct ErrorReporter {
    policy: ErrorPolicy,
    connector: String,
    task: u32,
    dlq: Option<FutureProducer<crate::kafka::log::KafkaLog>>,
    /// Hides known secrets from error texts (log lines, DLQ headers).
    redactor: crate::providers::Redactor,
    metrics: crate::metrics::TaskMetrics,
}

impl ErrorReporter {
    pub fn new(
        policy: ErrorPolicy,
        connector: &str,
        task: u32,
        producer_config: &ClientConfig,
        metrics: crate::metrics::TaskMetrics,
    ) -> anyhow::Result<ErrorReporter> {
        let dlq = match &policy.dlq_topic {
            Some(_) => Some(
                producer_config
                    .create_with_context(crate::kafka::log::KafkaLog::new(format!(
                        "dead-letter queue producer ({connector}-{task})"
                    )))
                    .context("create the dead-letter queue producer")?,
            ),
            None => None,
        };
        Ok(ErrorReporter {
            policy,
            connector: connector.to_string(),
            task,
            dlq,
            redactor: crate::providers::Redactor::process(),
            metrics,
        })
    }

    pub fn policy(&self) -> &ErrorPolicy {
        &self.policy
    }

    /// Whether a report of a failed record shows its contents (the log with
    /// `errors.log.include.messages`, or the dead-letter queue): when not, a report needs only
    /// where the record was going.
    pub fn needs_contents(&self) -> bool {
        self.policy.tolerate_all
            && ((self.policy.log && self.policy.log_messages) || self.dlq.is_some())
    }

    /// A record failed. With `errors.tolerance=all` it is logged if asked, written to the
    /// dead-letter queue (acknowledged by Kafka before this returns, so that the offsets that
    /// skip it are committed only after) and `Ok` lets the task go on; with `none` the error
    /// is [`Fatal`]: the task fails, naming the record, and is not restarted onto it again.
    pub async fn report(&self, failure: &Failure<'_>, record: &FailedRecord) -> anyhow::Result<()> {
        let at = locate(record);
        self.metrics.total_record_errors.inc();
        if !self.policy.tolerate_all {
            let message = format!(
                "{} failed for {at} and errors.tolerance=none: {}",
                failure.stage.name(),
                failure.error
            );
            // A failure that may pass leaves the task to the restart policy; one of the data
            // itself would only fail again on the same record.
            return Err(if failure.retriable {
                anyhow::anyhow!(message)
            } else {
                Fatal(message).into()
            });
        }
        if self.policy.log {
            let mut message = format!(
                "error in stage {} ({}) for {at}: {}",
                failure.stage.name(),
                failure.class,
                failure.error
            );
            if self.policy.log_messages {
                let show = |b: &Option<Vec<u8>>| {
                    b.as_deref()
                        .map_or("null".into(), |b| String::from_utf8_lossy(b).into_owned())
                };
                message.push_str(&format!(
                    "; key={} value={}",
                    show(&record.key),
                    show(&record.value)
                ));
            }
            let message = self.redactor.redact(&message);
            tracing::error!(connector = %self.connector, task = self.task, "{message}");
        }
        self.metrics.total_records_skipped.inc();
        let (Some(producer), Some(topic)) = (&self.dlq, &self.policy.dlq_topic) else {
            return Ok(());
        };
        let headers = self.headers(failure, record);
        self.metrics.deadletterqueue_produce_requests.inc();
        // A broker that is briefly away is waited for as errors.retry.* allow.
        self.retry(|| {
            let mut out: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(topic).headers(headers.clone());
            if let Some(k) = &record.key {
                out = out.key(k.as_slice());
            }
            if let Some(v) = &record.value {
                out = out.payload(v.as_slice());
            }
            async move {
                producer.send(out, DLQ_TIMEOUT).await.map_err(|(e, _)| {
                    let retriable = is_retriable(&e);
                    (e, retriable)
                })
            }
        })
        .await
        .map_err(|e| {
            self.metrics.deadletterqueue_produce_failures.inc();
            anyhow::anyhow!("write {at} to dead-letter queue {topic}: {e}")
        })?;
        Ok(())
    }

    /// The record's own headers, then Kafka Connect's context headers when enabled.
    fn headers(&self, failure: &Failure<'_>, record: &FailedRecord) -> OwnedHeaders {
        let mut headers = OwnedHeaders::new();
        for (key, value) in &record.headers {
            headers = headers.insert(Header {
                key,
                value: value.as_deref(),
            });
        }
        if !self.policy.dlq_context_headers {
            return headers;
        }
        let mut context: Vec<(&str, String)> =
            vec![("__connect.errors.topic", record.topic.clone())];
        if let Some(p) = record.partition {
            context.push(("__connect.errors.partition", p.to_string()));
        }
        if let Some(o) = record.offset {
            context.push(("__connect.errors.offset", o.to_string()));
        }
        context.extend([
            ("__connect.errors.connector.name", self.connector.clone()),
            ("__connect.errors.task.id", self.task.to_string()),
            ("__connect.errors.stage", failure.stage.name().to_string()),
            ("__connect.errors.class.name", failure.class.to_string()),
            (
                "__connect.errors.exception.class.name",
                failure.exception.to_string(),
            ),
            (
                "__connect.errors.exception.message",
                self.redactor.redact(&failure.error.to_string()),
            ),
            (
                "__connect.errors.exception.stacktrace",
                self.redactor
                    .redact(&format!("{}: {}", failure.exception, failure.error)),
            ),
        ]);
        for (key, value) in &context {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        headers
    }

    /// Runs `op`, retrying failures it calls retriable with exponential backoff (from 300 ms,
    /// capped by `errors.retry.delay.max.ms`) until `errors.retry.timeout` has passed.
    pub async fn retry<T, E: Display, F: std::future::Future<Output = Result<T, (E, bool)>>>(
        &self,
        mut op: impl FnMut() -> F,
    ) -> Result<T, E> {
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(300);
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err((e, retriable)) => {
                    let elapsed = started.elapsed();
                    let left = self.policy.retry_timeout.map(|t| t.saturating_sub(elapsed));
                    if !retriable || left == Some(Duration::ZERO) {
                        return Err(e);
                    }
                    let wait = delay
                        .min(self.policy.retry_delay_max)
                        .min(left.unwrap_or(Duration::MAX));
                    let e = self.redactor.redact(&e.to_string());
                    tracing::warn!(connector = %self.connector, task = self.task, "retriable failure, retrying in {wait:?}: {e}");
                    tokio::time::sleep(wait).await;
                    delay = delay.saturating_mul(2);
                }
            }
        }
    }
}

/// Whether a failed write may succeed if tried again (the broker away, a leader moving).
fn is_retriable(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageTimedOut
                | C::QueueFull
                | C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::NotLeaderForPartition
                | C::LeaderNotAvailable
                | C::RequestTimedOut
                | C::NetworkException
                | C::NotEnoughReplicas
        )
    )
}

/// "topic-partition@offset" for a sink record, the topic for a source record.
fn locate(record: &FailedRecord) -> String {
    match (record.partition, record.offset) {
        (Some(p), Some(o)) => format!("record {}-{p}@{o}", record.topic),
        _ => format!("a record for topic {}", record.topic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reporter(policy: ErrorPolicy) -> ErrorReporter {
        ErrorReporter::new(
            policy,
            "c",
            0,
            &ClientConfig::new(),
            crate::metrics::worker().task("c", 0, true),
        )
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn retriable_failures_retry_until_the_timeout_others_fail_at_once() {
        let r = reporter(ErrorPolicy {
            retry_timeout: Some(Duration::from_secs(5)),
            retry_delay_max: Duration::from_secs(1),
            ..ErrorPolicy::default()
        });
        // (retriable, the attempt that succeeds, the result, attempts made). Waits of 0.3, 0.6,
        // 1, 1, 1, 1 and the last 0.1 s fill the 5 s: eight attempts.
        for (retriable, succeeds_at, expected, attempts) in [
            (true, None, Err("down"), 8),
            (false, None, Err("down"), 1),
            (true, Some(3), Ok(7), 3),
        ] {
            let mut calls = 0;
            let result: Result<u32, &str> = r
                .retry(|| {
                    calls += 1;
                    std::future::ready(match succeeds_at {
                        Some(at) if calls >= at => Ok(7),
                        _ => Err(("down", retriable)),
                    })
                })
                .await;
            assert_eq!(
                (result, calls),
                (expected, attempts),
                "retriable {retriable}"
            );
        }
    }

    #[tokio::test]
    async fn tolerance_none_is_fatal_and_names_the_record() {
        let r = reporter(ErrorPolicy::default());
        let failure = Failure {
            stage: Stage::ValueConverter,
            class: "org.apache.kafka.connect.json.JsonConverter",
            exception: "org.apache.kafka.connect.errors.DataException",
            error: &"bad json",
            retriable: false,
        };
        let record = FailedRecord {
            topic: "t".into(),
            partition: Some(2),
            offset: Some(9),
            ..FailedRecord::default()
        };
        let e = r.report(&failure, &record).await.unwrap_err();
        assert!(crate::restart::is_fatal(&e));
        assert!(
            e.to_string()
                .contains("VALUE_CONVERTER failed for record t-2@9"),
            "{e}"
        );
        let tolerant = reporter(ErrorPolicy {
            tolerate_all: true,
            ..ErrorPolicy::default()
        });
        tolerant.report(&failure, &record).await.unwrap();
    }
}
