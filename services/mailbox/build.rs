//! Compiles the storage record definitions (services/mailbox/proto) with protox. They import
//! nothing: the records are the storage's own types, converted to and from the API's messages
//! in `src/records.rs`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "proto/tern/storage/v1/records.proto";
    println!("cargo:rerun-if-changed={file}");
    let fds = protox::compile([file], ["proto"])?;
    tonic_prost_build::configure().build_client(false).build_server(false).compile_fds(fds)?;
    Ok(())
}
