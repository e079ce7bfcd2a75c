//! Wires storage and the HTTP server together.
