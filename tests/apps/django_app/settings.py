"""Settings: sqlite as ``default`` (DJANGO_SQLITE_PATH, in memory by default) and the machine's
PostgreSQL as ``postgres`` (PGHOST/PGPORT/PGUSER/PGDATABASE). Sessions live in signed cookies,
so authentication needs only the ``auth_user`` table."""

import os

SECRET_KEY = "ddagent-tests"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.apps.django_app.urls"
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
] + (["ddagent.hooks.django"] if os.environ.get("DJANGO_SEED_SETUP") else [])

MIDDLEWARE = (["ddagent.hooks.django.TraceMiddleware"] if os.environ.get("DJANGO_SEED_SETUP")
              else []) + [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "tests.apps.django_app.views.timing_middleware",
]
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_SQLITE_PATH", ":memory:"),
    },
    "postgres": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("PGDATABASE", "test"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
    },
}

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                      "KEY_PREFIX": "app"}}

TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [os.path.join(os.path.dirname(__file__), "templates")],
}]

DATADOG_TRACE = {"DEFAULT_SERVICE": "seed-django"} if os.environ.get("DJANGO_SEED_SETUP") else {}
