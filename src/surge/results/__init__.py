"""Task status and results: what the workers record and ``GET /tasks/<id>`` reads."""
