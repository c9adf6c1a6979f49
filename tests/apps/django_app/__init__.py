"""A small Django project for the Django integration tests (in-process, under gunicorn and
under uvicorn: ``wsgi.py`` and ``asgi.py``)."""
