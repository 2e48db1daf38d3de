//! The embedded Kafka: librdkafka's mock cluster, which speaks the Kafka protocol on loopback
//! sockets. It lives on its own thread because the mock cluster handle cannot move between
//! threads; dropping [`EmbeddedKafka`] shuts it down.

use std::sync::mpsc;
use std::thread::JoinHandle;

use anyhow::{anyhow, Context as _};
use rdkafka::mocking::MockCluster;

pub struct EmbeddedKafka {
    bootstrap: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedKafka {
    /// Starts a cluster of `brokers` brokers and creates `topics` (name, partitions).
    pub fn start(brokers: i32, topics: &[(String, i32)]) -> anyhow::Result<EmbeddedKafka> {
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let topics = topics.to_vec();
        let thread = std::thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(brokers) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow!("start mock cluster: {e}")));
                        return;
                    }
                };
                for (topic, partitions) in &topics {
                    if let Err(e) = cluster.create_topic(topic, *partitions, brokers.min(3)) {
                        let _ = ready_tx.send(Err(anyhow!("create topic {topic}: {e}")));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Blocks until stop is sent or the handle is dropped.
                let _ = stop_rx.recv();
                drop(cluster);
            })
            .context("start embedded Kafka thread")?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| anyhow!("embedded Kafka thread ended during start-up"))??;
        Ok(EmbeddedKafka {
            bootstrap,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }
}

impl Drop for EmbeddedKafka {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
