"""`transformer serve`: an HTTP API (FastAPI + uvicorn) over a model directory, with dynamic batching of
translation requests, and a web page at /. app.py documents the endpoints and their JSON; batching.py the
batcher; settings.py the limits (each a flag of `transformer serve`). Needs the `serve` extra:
`pip install 'transformer[serve]'`."""
