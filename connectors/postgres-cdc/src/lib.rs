//! PostgreSQL change data capture, Debezium's `PostgresConnector` for Sluice: logical
//! replication with the built-in `pgoutput` plugin. Built so far: [`pgoutput`], the decoder of
//! the plugin's messages; the connector itself (snapshot, streaming, the Debezium envelope,
//! slot advancement after Kafka's acknowledgement) comes next.

pub mod pgoutput;
