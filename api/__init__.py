"""The HTTP API (FastAPI): routes, schemas, auth and error mapping. Never imports torch."""
