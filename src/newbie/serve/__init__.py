"""`newbie serve`: the engine behind an HTTP API (FastAPI) with a durable SQLite job queue, one worker per
GPU, and a Ray Serve deployment for one replica per GPU across a cluster. See docs/api.md."""
