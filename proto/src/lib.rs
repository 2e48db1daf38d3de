//! Generated protobuf and gRPC types of Sluice. Every wire type lives here and nowhere else.

mod assignment;
pub mod codec;
pub mod encode;
pub mod structs;
pub mod wire;

/// The connector protocol: worker ↔ connector process.
pub mod connector {
    /// Version 1 of the connector protocol.
    // Generated code: boxing oneof variants would make every message harder to build.
    #[allow(clippy::large_enum_variant)]
    pub mod v1 {
        tonic::include_proto!("sluice.connector.v1");

        /// The protocol versions this build speaks.
        pub const PROTOCOL_VERSIONS: &[u32] = &[1];

        /// Feature: a sink task's batches in memory the worker shares with the connector
        /// (`SinkOpen.shared_memory`, `SharedBatch`, `SharedReleased`).
        pub const FEATURE_SINK_SHARED_MEMORY: &str = "sink.shared_memory";

        /// Launch contract: the Unix socket path the connector must serve on.
        pub const ENV_SOCKET: &str = "SLUICE_CONNECTOR_SOCKET";
        /// Launch contract: the protocol versions the worker speaks, comma-separated.
        pub const ENV_PROTOCOL_VERSIONS: &str = "SLUICE_PROTOCOL_VERSIONS";
        /// The largest message either side accepts.
        pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
        /// HTTP/2 flow-control windows for the connector socket. Batches are megabytes; the
        /// 64 KiB default would stall every stream on window updates.
        pub const H2_STREAM_WINDOW: u32 = 4 * 1024 * 1024;
        pub const H2_CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;
        /// HTTP/2 frame size the connector accepts: large batches in few frames.
        pub const H2_MAX_FRAME: u32 = 1024 * 1024;
    }
}

/// The public management API, served by the controller.
pub mod api {
    pub mod v1 {
        tonic::include_proto!("sluice.api.v1");
    }
}

/// The controller ↔ worker protocol.
pub mod cluster {
    pub mod v1 {
        tonic::include_proto!("sluice.cluster.v1");
    }
}

/// Encoded `FileDescriptorSet` of every proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sluice_descriptor");
