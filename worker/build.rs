//! Compiles `csrc/mock_defaults.c` against the librdkafka tree that rdkafka-sys built (its
//! `cargo:root`, seen here as DEP_RDKAFKA_ROOT), for the embedded Kafka's default partitions.

fn main() {
    let root = std::env::var("DEP_RDKAFKA_ROOT")
        .expect("rdkafka-sys reports where it built librdkafka (DEP_RDKAFKA_ROOT)");
    println!("cargo:rerun-if-changed=csrc/mock_defaults.c");
    cc::Build::new()
        .file("csrc/mock_defaults.c")
        .include(format!("{root}/src"))
        .warnings(false)
        .compile("sluice_mock_defaults");
}
