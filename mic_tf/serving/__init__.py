"""Online serving as in the paper's section 2.9 (spec 9): a bundle exported from a finished run,
Redis as the online store (histories, similar users, similar items; keys carry the bundle
version), and an HTTP service (FastAPI + uvicorn) that answers cross-channel recommendations with
the same scoring code as offline inference (`mic_tf.inference`).

    python -m mic_tf.serving export --run_dir=RUN --bundle_dir=B
    python -m mic_tf.serving load --bundle_dir=B --redis_url=redis://127.0.0.1:6379/0
    python -m mic_tf.serving serve --bundle_dir=B --redis_url=redis://127.0.0.1:6379/0

Modules: `bundle` (format, atomic writer, reader), `export` (run -> bundle), `keys` (Redis key
layout), `loader` (bulk load, drop), `store` (the service's Redis calls, time-outs, back-off),
`tower` (the SavedModel online), `engine` (one request), `app` (routes), `metrics`,
`workers` (reloads across the processes of `serve --workers=N`).
Importing this package imports neither TensorFlow nor FastAPI.
"""
