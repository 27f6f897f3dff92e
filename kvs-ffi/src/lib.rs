//! C bindings (not built yet).
