# ASM Console production image. Its default command serves the web app with gunicorn; the
# same image runs migrations, the Celery worker and Celery beat (see docker-compose.yml).
FROM python:3.11-slim

# PYTHONPATH: the code runs from the source tree in /app, because the settings find
# templates/, static/ and data/ next to the packages while the wheel built from
# pyproject.toml carries only .py files. Setting it makes manage.py, gunicorn and celery
# import that one copy whatever their working directory.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    DJANGO_SETTINGS_MODULE=asm_console.settings \
    PYTHONPATH=/app

RUN groupadd --system --gid 10001 asm \
    && useradd --system --uid 10001 --gid asm --create-home --home-dir /home/asm \
        --shell /usr/sbin/nologin asm

WORKDIR /app

# Dependencies get their own layer, rebuilt only when pyproject.toml or constraints.txt
# change: with nothing but those present, `pip install .` installs every runtime dependency
# (no dev extras) at the versions CI tested, and the project's metadata. The code follows.
COPY pyproject.toml constraints.txt ./
RUN pip install -c constraints.txt . \
    && rm -rf build *.egg-info

COPY . .

# collectstatic imports the settings but never connects to the database or the broker.
# Production-shaped settings keep the data directory untouched, and the secret key is a
# throwaway that exists only for this one command. Code and collected static files stay
# owned by root (read-only for the app user); only data/ is writable.
RUN DATABASE_URL=postgres://collectstatic@127.0.0.1:5432/collectstatic \
    CELERY_BROKER_URL=redis://127.0.0.1:6379/0 \
    SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(64))')" \
    python manage.py collectstatic --noinput \
    && python -m compileall -q . \
    && mkdir -p /app/data \
    && chown asm:asm /app/data

USER 10001:10001

EXPOSE 8000

# The slim image has no curl. The probe sends the first concrete ALLOWED_HOSTS entry as its
# Host header so that Django does not refuse it; /healthz is exempt from the HTTPS redirect.
# A 503 (database or broker down) raises, so the probe fails.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; hosts = [h.strip().lstrip('.') for h in os.environ.get('ALLOWED_HOSTS', '').split(',')]; host = next((h for h in hosts if h and '*' not in h), 'localhost'); urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:8000/healthz', headers={'Host': host}), timeout=8)"]

# gthread workers: 3 processes x 4 threads. The intake answers fast and hands work to the
# Celery worker, so the web tier is mostly waiting on PostgreSQL. Scale with more replicas.
CMD ["gunicorn", "asm_console.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--threads", "4", "--worker-tmp-dir", "/dev/shm", "--graceful-timeout", "25", "--access-logfile", "-", "--error-logfile", "-"]
