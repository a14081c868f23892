"""The Celery worker: the bridge from a stored job to ``rapid_core.trainer.train``."""
