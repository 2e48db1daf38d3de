//! Generated protobuf and gRPC types of Sluice. Every wire type lives here and nowhere else.

/// The connector protocol: worker ↔ connector process.
pub mod connector {
    /// Version 1 of the connector protocol.
    pub mod v1 {
        tonic::include_proto!("sluice.connector.v1");

        /// The protocol versions this build speaks.
        pub const PROTOCOL_VERSIONS: &[u32] = &[1];
    }
}

/// Encoded `FileDescriptorSet` of every proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sluice_descriptor");
