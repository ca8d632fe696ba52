"""The signal service (FastAPI): health, stored series, the latest signal per series, live
predictions with a decision, and stored runs. :func:`mlengine.service.app.create_app` builds
the app; :func:`mlengine.service.cli.serve` runs it under uvicorn (``mlengine serve``).

Nothing is imported here, so that the command line starts without loading the web stack."""
