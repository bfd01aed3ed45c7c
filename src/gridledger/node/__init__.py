"""A running node: configuration, wiring, HTTP API, event stream."""
