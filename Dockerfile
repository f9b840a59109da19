# syntax=docker/dockerfile:1
# ingestd: SMTP on 2525, HTTP (/healthz, /metrics) on 8080, SQLite in the /app/var volume.
#   docker build -t ingestd .
#   docker run -d -p 2525:2525 -p 8080:8080 -v ingestd-var:/app/var ingestd
# For PostgreSQL set INGESTD_DATABASE_URL=postgresql+psycopg://user:pass@host/db.
# Give shutdown time to drain: docker stop -t 30.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 ingestd \
    && useradd --system --uid 10001 --gid ingestd --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin ingestd

# Install the package from a scratch copy, pinned by requirements.lock, and keep no source.
COPY pyproject.toml README.md requirements.lock /src/
COPY ingest/ /src/ingest/
COPY channels/ /src/channels/
RUN pip install --no-cache-dir -c /src/requirements.lock /src \
    && rm -rf /src

WORKDIR /app
RUN mkdir -p rules templates var \
    && chown ingestd:ingestd var
COPY config/ config/
# rules/ and templates/ may be empty, and git keeps no empty folder: the [s] pattern lets
# BuildKit go on when a folder is absent from the build context.
COPY rule[s] rules/
COPY template[s] templates/

ENV INGESTD_SMTP_HOST=0.0.0.0 \
    INGESTD_HTTP_HOST=0.0.0.0

USER 10001:10001
VOLUME /app/var
EXPOSE 2525 8080

HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + (os.environ.get('INGESTD_HTTP_PORT') or '8080') + '/healthz', timeout=8)"]

CMD ["ingestd", "--config", "config/ingestd.yaml", "run"]
