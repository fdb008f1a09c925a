# The TaskRunner image: `taskrunner api` (the default) or `taskrunner worker`. See docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY compiler compiler
COPY workflows workflows
COPY activities activities
COPY api api
COPY cli cli
COPY db db
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin taskrunner \
    && mkdir -p /data \
    && chown taskrunner /data

# Runs, artifacts and workspaces live in /data: a volume shared by the API and the workers.
ENV TASKRUNNER_DATA_DIR=/data \
    TASKRUNNER_API_HOST=0.0.0.0 \
    TASKRUNNER_API_PORT=8080 \
    TASKRUNNER_LOG_FORMAT=json
USER taskrunner
EXPOSE 8080
ENTRYPOINT ["taskrunner"]
CMD ["api"]
