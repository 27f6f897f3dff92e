//! The benchmarks' shared parts: the engines under test (`peer`), the workloads, the open
//! child, the report and the plot. Two binaries use them: `kvs-bench` (`src/main.rs`, the
//! comparison at small sizes) and `scale` (`src/bin/scale.rs`, up to 100M keys).

pub mod host;
pub mod open;
pub mod peer;
pub mod plot;
pub mod report;
pub mod workload;
