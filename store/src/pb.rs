//! Generated protobuf and gRPC code (see `build.rs`).
#![allow(clippy::all, missing_docs)]

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    // The JSON gateway's mapping (pbjson, see build.rs).
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

pub mod mgmtpeer {
    tonic::include_proto!("mgmtpeer");
}
