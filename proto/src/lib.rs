//! Generated protobuf and gRPC types of Sluice. Every wire type lives here and nowhere else.

/// The connector protocol: worker ↔ connector process.
pub mod connector {
    /// Version 1 of the connector protocol.
    pub mod v1 {
        tonic::include_proto!("sluice.connector.v1");

        /// The protocol versions this build speaks.
        pub const PROTOCOL_VERSIONS: &[u32] = &[1];

        /// Launch contract: the Unix socket path the connector must serve on.
        pub const ENV_SOCKET: &str = "SLUICE_CONNECTOR_SOCKET";
        /// Launch contract: the protocol versions the worker speaks, comma-separated.
        pub const ENV_PROTOCOL_VERSIONS: &str = "SLUICE_PROTOCOL_VERSIONS";
    }
}

/// Encoded `FileDescriptorSet` of every proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sluice_descriptor");
