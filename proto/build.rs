//! Compiles `proto/` with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "sluice/connector/v1/connector.proto",
        "sluice/api/v1/api.proto",
        "sluice/cluster/v1/cluster.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["."])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("sluice_descriptor.bin");
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .codec_path("crate::codec::SliceCodec")
        // A field's schema on the heap: a struct schema's fields are then small enough to
        // move, grow and retain cheaply (transforms rewrite them per record).
        .boxed(".sluice.connector.v1.Field.schema")
        .compile_fds(descriptors)?;
    Ok(())
}
