//! Compiles the Sentry proto with protox (pure Rust), so no system `protoc` is needed.
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "dapr/proto/sentry/v1/sentry.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["."])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("sentry_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Both carry bearer credentials (the caller's token, the JWT-SVIDs): their Debug is
        // written by hand in lib.rs so that neither can reach a log.
        .skip_debug([
            ".dapr.proto.sentry.v1.SignCertificateRequest",
            ".dapr.proto.sentry.v1.SignCertificateResponse",
        ])
        .compile_fds(fds)?;
    Ok(())
}
