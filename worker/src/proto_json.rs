//! Protobuf messages as proto3 JSON (and back), through the descriptors compiled into this
//! binary: the CLI's `--output json` and plugin manifests.

use anyhow::{anyhow, Context as _};
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};

fn descriptor(full_name: &str) -> anyhow::Result<MessageDescriptor> {
    static POOL: std::sync::OnceLock<Result<DescriptorPool, String>> = std::sync::OnceLock::new();
    let pool = POOL
        .get_or_init(|| {
            DescriptorPool::decode(sluice_proto::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| anyhow!("load the compiled descriptors: {e}"))?;
    pool.get_message_by_name(full_name)
        .ok_or_else(|| anyhow!("no message type {full_name}"))
}

/// `message`, of proto type `full_name`, as proto3 JSON; fields at their default value are
/// written too when `defaults`.
pub fn to_json<M: prost::Message>(
    message: &M,
    full_name: &str,
    defaults: bool,
) -> anyhow::Result<serde_json::Value> {
    let dynamic =
        DynamicMessage::decode(descriptor(full_name)?, message.encode_to_vec().as_slice())?;
    let options = SerializeOptions::new().skip_default_fields(!defaults);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .with_context(|| format!("{full_name} as JSON"))
}

/// A message of proto type `full_name` from proto3 JSON.
pub fn from_json<M: prost::Message + Default>(
    value: serde_json::Value,
    full_name: &str,
) -> anyhow::Result<M> {
    let dynamic = DynamicMessage::deserialize(descriptor(full_name)?, value)?;
    Ok(M::decode(
        prost::Message::encode_to_vec(&dynamic).as_slice(),
    )?)
}
