//! Generated protobuf and gRPC code (see `build.rs`).
#![allow(clippy::all, missing_docs)]

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

pub mod mgmtpeer {
    tonic::include_proto!("mgmtpeer");
}
