"""The service's persistence: settings, SQLAlchemy models, repositories, artifact storage, broker."""
