//! Tests that cross crates: the binaries end to end, C and Python against the real library.
