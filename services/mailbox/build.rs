//! Compiles the storage record definitions (services/mailbox/proto) with protox; the API types
//! they embed come from the tern-proto crate.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "proto/tern/storage/v1/records.proto";
    println!("cargo:rerun-if-changed={file}");
    println!("cargo:rerun-if-changed=../../proto/tern/mailbox/v1/types.proto");
    let fds = protox::compile([file], ["proto", "../../proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .extern_path(".tern.mailbox.v1", "::tern_proto::v1")
        .compile_fds(fds)?;
    Ok(())
}
