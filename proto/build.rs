//! Compiles the protobuf API with protox, a pure-Rust protobuf compiler, so that a fresh machine
//! needs no system `protoc`. The generated code lives in OUT_DIR and is never stale, because it
//! is produced from the committed `.proto` files on every build that changes them.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["tern/mailbox/v1/types.proto", "tern/mailbox/v1/mailbox.proto", "tern/mailbox/v1/admin.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(files, ["."])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
