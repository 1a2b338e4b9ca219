//! AutoEdges and AutoGroup, driven through `compile` as a user would: table
//! tests of graph -> expected graph, and properties on random graphs.

mod autoedges;
mod autogroup;
mod props;
mod support;
