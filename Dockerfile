# mfa-backup-codes: one image for every role (api, worker, beat, migrations).
# The role is the command: `docker run IMAGE serve|worker|beat|db upgrade`.
# No secret is baked in: keys come at run time from MFA_*_FILE (Docker secrets).

# ---- builder: a wheel of the project, installed with its runtime dependencies into /opt/venv
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY domain ./domain
COPY infra ./infra
COPY workers ./workers
COPY api ./api
COPY cli ./cli
COPY migrations ./migrations

# Runtime dependencies only: the [dev] extra (pytest, ruff, mypy, ...) never enters the image.
RUN pip install --upgrade pip \
 && pip wheel --no-deps --wheel-dir /wheels . \
 && pip install /wheels/mfa_backup_codes-*.whl

# ---- runtime
FROM python:3.11-slim AS runtime

# A fixed uid, so that secret files on the host can be given to it (see deploy/README.md).
RUN groupadd --system --gid 10001 mfa \
 && useradd --system --uid 10001 --gid mfa --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin mfa

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# gunicorn reads ./gunicorn.conf.py from its working directory by default.
COPY deploy/gunicorn.conf.py /app/gunicorn.conf.py
# The only writable place for the app user (celery beat's schedule file, scratch).
RUN mkdir -p /app/var/checkpoints && chown -R mfa:mfa /app/var

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    MFA_VAR_DIR=/app/var

USER mfa

EXPOSE 8000

# Liveness of the API role; compose disables it for the worker, beat and migrate roles.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

ENTRYPOINT ["mfa-codes"]
CMD ["serve"]
