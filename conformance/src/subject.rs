//! The connector process under test, launched as a worker launches it.

use std::time::Duration;

use anyhow::anyhow;
use sluice_proto::connector::v1::{self as proto};
use tokio::process::{Child, ChildStdin};
use tokio::time::timeout;

use sluice_worker::host::process::{self, Client, OutputTail, PluginCommand};

use crate::OUTPUT_LINES;

/// The connector process under test, launched as a worker launches it.
pub(crate) struct Subject {
    pub(crate) child: Child,
    pub(crate) stdin: Option<ChildStdin>,
    pub(crate) client: Client,
    pub(crate) output: OutputTail,
    pub(crate) _dir: tempfile::TempDir,
}

impl Subject {
    pub(crate) async fn start(
        command: &PluginCommand,
        show_output: bool,
    ) -> anyhow::Result<Subject> {
        let (mut child, dir, socket) = process::spawn(command, None)?;
        let output = OutputTail::collect(&mut child, OUTPUT_LINES, move |line| {
            if show_output {
                eprintln!("connector| {line}");
            }
        });
        let stdin = child.stdin.take();
        let channel = match process::connect(&socket, &mut child).await {
            Ok(channel) => channel,
            Err(e) => {
                let _ = child.start_kill();
                return Err(anyhow!("{e:#}{}", output.describe().await));
            }
        };
        let client = Client::new(channel)
            .max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(proto::MAX_MESSAGE_BYTES);
        Ok(Subject {
            child,
            stdin,
            client,
            output,
            _dir: dir,
        })
    }

    pub(crate) async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        timeout(within, self.child.wait()).await.ok()?.ok()
    }

    pub(crate) fn output_tail(&self) -> String {
        self.output.lines().join("\n")
    }
}
