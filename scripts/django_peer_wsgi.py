"""The Django peer blog (../shared/peers/django-blog) as a WSGI application, for wrk.

bench.py measures the peer through Django's test client; a load generator needs a server. Each
gunicorn sync worker imports this module once: it creates its own in-memory SQLite database and
seeds it exactly as bench.py does (20 articles x 50 comments), then serves
/<nocache|djangocache|sweeper>/articles/<id>. Used by scripts/bench-blog.sh; nothing of the
peer itself is copied.
"""
import os
import sys

PEER = os.environ.get(
    "DJANGO_PEER",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "peers", "django-blog"),
)
sys.path.insert(0, os.path.abspath(PEER))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

from blog.seed import seed  # noqa: E402

# The database lives in this worker's one connection (":memory:"): Django would close it after
# every request and open an empty one, so keep it for the worker's life.
from django.core.signals import request_finished, request_started  # noqa: E402
from django.db import close_old_connections  # noqa: E402

request_started.disconnect(close_old_connections)
request_finished.disconnect(close_old_connections)

call_command("migrate", run_syncdb=True, verbosity=0)
seed()

application = get_wsgi_application()
