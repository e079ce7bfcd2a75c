//! The InfluxDB 1.x HTTP API.
