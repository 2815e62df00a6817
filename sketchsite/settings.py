"""Django settings, read from the environment (12-factor, django-environ).

Every variable is listed with its default in the README's configuration table. The defaults give the
embedded set-up: SQLite under var/, Celery in eager mode, DEBUG on, files under var/media.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
# An optional .env file beside manage.py (never committed) is read first; real environment variables win.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG: bool = env.bool("DEBUG", default=True)

_DEV_SECRET_KEY = "django-insecure-dev-only-sketchsearch"  # noqa: S105 - only accepted with DEBUG on
SECRET_KEY: str = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = _DEV_SECRET_KEY

ALLOWED_HOSTS: list[str] = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DEBUG is off")
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # Before staticfiles: runserver then leaves static files to WhiteNoise (as in production), whose lookup refuses
    # "/static/../.." with a 404; staticfiles' own runserver handler answered such paths with a 500.
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "axes",  # login throttling: see AXES_* below
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served from here: /api/docs/ works offline
    "indexing",
    "search",
    "evaluation",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a lockout into its 429 response
]

# django-axes counts failed logins (the admin's form, Basic auth on the API) per client address and, after
# AXES_FAILURE_LIMIT in a row, refuses that address for AXES_COOLOFF_MINUTES (429), even with the right password;
# a successful login resets the count. Its backend comes first and needs the request, which the admin and DRF pass.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_ENABLED: bool = env.bool("AXES_ENABLED", default=True)
AXES_FAILURE_LIMIT: int = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_COOLOFF_MESSAGE = "Locked out after too many failed logins: try again later."  # the admin's lockout page
AXES_VERBOSE = False  # no start-up banner on every manage.py command; lockouts are still logged

ROOT_URLCONF = "sketchsite.urls"
WSGI_APPLICATION = "sketchsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "sketchsite" / "templates"],  # the admin's branding, favicon and login hint
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# DATABASE_URL, e.g. postgres://postgres@127.0.0.1:5432/sketchsearch (psycopg 3). Default: SQLite under var/.
if "DATABASE_URL" not in env:
    VAR_DIR.mkdir(exist_ok=True)  # SQLite creates the file, not its folder
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'sketchsearch.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process read while a worker writes; the timeout waits out a writer instead of failing.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"}
    # A file, not Django's in-memory default: the tests' Celery worker thread must see the same database.
    # Named per process, so two test runs in one checkout never share (and lock) one test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-sketchsearch-{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# The bucket index's INCLUDE (image) makes it covering on PostgreSQL; SQLite ignores it, which is fine.
SILENCED_SYSTEM_CHECKS = ["models.W040"]

# CACHE_URL, e.g. redis://127.0.0.1:6379/1: shared by all web processes (search throttling counts).
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "static")))
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
# With DEBUG (make run), WhiteNoise serves the apps' static folders directly, re-reading them on change; without it,
# only collectstatic's STATIC_ROOT. Set here from the environment's DEBUG (WhiteNoise's own default reads
# settings.DEBUG at start-up, which the tests switch off).
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# Production hardening (DEBUG off): HTTPS-only cookies, HSTS, redirect to HTTPS unless a proxy terminates it.
if not DEBUG:
    SECURE_SSL_REDIRECT: bool = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS: int = env.int("SECURE_HSTS_SECONDS", default=31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SECURE_REFERRER_POLICY = "same-origin"
    X_FRAME_OPTIONS = "DENY"
    if not SECURE_HSTS_PRELOAD:
        SILENCED_SYSTEM_CHECKS += ["security.W021"]  # preload is an opt-in decision

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Basic first: an API login failure is a 401 with WWW-Authenticate (DRF takes the header from the first class).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "sketchsite.authentication.BasicAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    "EXCEPTION_HANDLER": "sketchsite.api.json_exception_handler",  # every API error is JSON with a message
    "DEFAULT_THROTTLE_RATES": {"search": env.str("SEARCH_THROTTLE_RATE", default="600/minute")},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Sketchsearch API",
    "DESCRIPTION": "Search a collection of images with a hand-drawn sketch (CNN features + LSH index).",
    "VERSION": "0.1.0",
    # Swagger UI from the pinned drf-spectacular-sidecar package (requirements.txt), not from a CDN's @latest.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Celery: no broker configured -> tasks run eagerly in the calling process (embedded default).
CELERY_BROKER_URL: str = env.str("CELERY_BROKER_URL", default="")
CELERY_RESULT_BACKEND: str = env.str("CELERY_RESULT_BACKEND", default=CELERY_BROKER_URL)
CELERY_TASK_ALWAYS_EAGER: bool = env.bool("CELERY_TASK_ALWAYS_EAGER", default=not CELERY_BROKER_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True  # a task whose worker dies is redelivered; tasks are idempotent (upserts)
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]

# Sketchsearch
SKETCHSEARCH_IMPORT_MAX_PIXELS: int = env.int("SKETCHSEARCH_IMPORT_MAX_PIXELS", default=40_000_000)
SKETCHSEARCH_QUERY_MAX_BYTES: int = env.int("SKETCHSEARCH_QUERY_MAX_BYTES", default=5 * 1024 * 1024)
# A query needs far fewer pixels than an import may hold: above this an uploaded query is refused (400).
SKETCHSEARCH_QUERY_MAX_PIXELS: int = env.int("SKETCHSEARCH_QUERY_MAX_PIXELS", default=4096 * 4096)
# A retired index version is deleted at an activation only once it has been retired this long, so a search that
# resolved it just before two quick flips still finds its bucket rows.
SKETCHSEARCH_RETIRED_INDEX_GRACE_SECONDS: int = env.int("SKETCHSEARCH_RETIRED_INDEX_GRACE_SECONDS", default=60)
# A search with the index's default probes probes further while its buckets hold fewer distinct images than this.
SKETCHSEARCH_MIN_CANDIDATES: int = env.int("SKETCHSEARCH_MIN_CANDIDATES", default=100)
# Where each index version's vectors are written at build time and memory-mapped by every process (a cache of the
# Feature rows: a missing folder is written again from them). Give each machine a local disk here.
# The default has a folder per database, so two databases on one machine (the demo, a benchmark) never prune each
# other's folders (indexing.serving.vector_folders_prune).
_DATABASE_SLUG = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(str(DATABASES["default"]["NAME"])).stem) or "default"
SKETCHSEARCH_VECTOR_DIR = Path(env.str("SKETCHSEARCH_VECTOR_DIR", default=str(VAR_DIR / "vectors" / _DATABASE_SLUG)))
# A serving process reads the images added to its index version (IndexAddition rows, one indexed query of ~1 ms)
# before a search at most this often; an addition written by the process itself is read at its next search. So an
# image added elsewhere is searchable within this many milliseconds; 0 reads before every search.
SKETCHSEARCH_ADDITIONS_POLL_MS: int = env.int("SKETCHSEARCH_ADDITIONS_POLL_MS", default=100)
# Each serving process maps its index version's vector folder in and locks it in memory (mlock), so the kernel does
# not evict the rows a search reads now and then (Elasticsearch's bootstrap.memory_lock, for the same reason).
# Needs RLIMIT_MEMLOCK >= the folder's size (ulimit -l, docker's --ulimit memlock=-1); without it a warning is
# logged and the pages stay mapped but evictable. The pages are shared: two processes lock one copy.
SKETCHSEARCH_LOCK_VECTORS: bool = env.bool("SKETCHSEARCH_LOCK_VECTORS", default=True)
# Candidates re-ranked exactly by cosine; more than this are first cut down by the Hamming distance of their 256-bit
# sign codes. 0 (the default) re-ranks every candidate: measured on 1M synthetic vectors, a cut to 1,000 of ~10,000
# candidates saved 7 ms of 37 but dropped recall@10 from 0.975 to 0.38 (README "Performance").
SKETCHSEARCH_RERANK_CANDIDATES: int = env.int("SKETCHSEARCH_RERANK_CANDIDATES", default=0)
# A search with more candidates than this many per hit asked for (at least 100) scores them first by the vector
# folder's int8 copy, a quarter of the bytes, and re-ranks only that many of the best exactly (float32 cosine).
# 0 re-ranks every candidate exactly. Sized on synthetic data of another seed than the benchmark's, where 2.5 per
# hit kept the whole exact top k (benchmarks/compact_bench.py, output in docs/scale-bench.md); 20 leaves room.
SKETCHSEARCH_SHORTLIST_PER_HIT: int = env.int("SKETCHSEARCH_SHORTLIST_PER_HIT", default=20)
# An index over the served sketch head ranks by class probabilities, so the images of the class a drawing is
# recognised as all score ~1: the k hits a search shows are ordered by (1 - w) * score + w * the cosine of their base
# backbone vectors (how alike the drawings look); the hits stay the class ranking's. 0.02 lets the look reorder only
# hits whose scores differ by less than ~0.02, near-ties of the class decision; fixed by that rule, not tuned
# (docs/relevance.md). 0 switches it off.
SKETCHSEARCH_LOOK_WEIGHT: float = env.float("SKETCHSEARCH_LOOK_WEIGHT", default=0.02)
# Load the active index and its CNN in a background thread when the process starts (`make run` sets it for
# runserver; gunicorn workers warm up in post_fork instead).
SKETCHSEARCH_WARM_UP_ON_START: bool = env.bool("SKETCHSEARCH_WARM_UP_ON_START", default=False)
# /api/indexes/ and the admin say a version should be rebuilt once it holds this many times the images its
# parameters were chosen for.
SKETCHSEARCH_REBUILD_GROWTH: float = env.float("SKETCHSEARCH_REBUILD_GROWTH", default=4.0)
# A 5 MB image as a base64 data URL in a JSON body is ~6.7 MB: let it reach the API's own size check (413).
DATA_UPLOAD_MAX_MEMORY_SIZE = SKETCHSEARCH_QUERY_MAX_BYTES * 3 // 2
# Query images are never written to disk: Django's default handlers spill uploads over 2.5 MB to a temporary
# file; keep them in memory (bounded by the limits above) unless SKETCHSEARCH_UPLOADS_TO_DISK is set.
# The first handler refuses a query image over SKETCHSEARCH_QUERY_MAX_BYTES (413) before the others can drop it.
FILE_UPLOAD_HANDLERS = [
    "search.uploads.QuerySizeLimitUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler"
    if env.bool("SKETCHSEARCH_UPLOADS_TO_DISK", default=False)
    else "django.core.files.uploadhandler.MemoryFileUploadHandler",
]
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"PIL": {"level": "WARNING"}},
}
