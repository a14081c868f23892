"""Service functions: the API's logic between parsed requests and the store."""
