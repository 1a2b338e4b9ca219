//! Compiles the etcd v3 and peer protocols with protox (pure Rust, no system
//! protoc), and the JSON mapping of etcd's messages with pbjson.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/rpc.proto", "proto/mvcc.proto", "proto/peer.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    // The JSON gateway's serde of etcd's messages, as grpc-gateway maps them
    // (proto field names; 64-bit integers as strings, bytes as base64, enums
    // by name, zero values omitted: pbjson's defaults).
    pbjson_build::Builder::new()
        .register_descriptors(&prost::Message::encode_to_vec(&fds))?
        .preserve_proto_field_names()
        .build(&[".etcdserverpb", ".mvccpb"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
