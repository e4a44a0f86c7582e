"""One model call, whatever the transport: admission, the Boundary, batching, lifespan, metrics.

A transport hands the Boundary a `CallPort` (decoded requests in, results out); the Boundary
admits the call, runs it and turns every failure into a status through `errors.to_status`.
"""
