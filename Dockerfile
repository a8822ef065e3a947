# syntax=docker/dockerfile:1
# One image for intake, processing, notify and the console. The command picks the service
# (`caseflow serve intake|processing|notify|console`, or `caseflow migrate`) and
# CASEFLOW_<SERVICE>_* variables configure it; see docker-compose.yml.

# Pinned (a tag of one Python release on one Debian release); move it on deliberately.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/caseflow
WORKDIR /src
# The dependencies first, read from pyproject.toml, so that a change to the code alone
# does not reinstall them; not its extras: `local` (nats-server and PostgreSQL from wheels,
# the sandbox's mailbox) is for one machine, `dev` for the tests
# (tests/unit/test_local_extra.py checks).
COPY pyproject.toml README.md requirements.lock ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && /opt/caseflow/bin/pip install -c requirements.lock -r /tmp/requirements.txt
COPY shared ./shared
COPY services ./services
RUN /opt/caseflow/bin/pip install --no-deps . \
    && /opt/caseflow/bin/caseflow --help > /dev/null

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/caseflow/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# In a container a service must listen on every interface to be reachable at all.
ENV CASEFLOW_INTAKE_HOST=0.0.0.0 \
    CASEFLOW_PROCESSING_HOST=0.0.0.0 \
    CASEFLOW_NOTIFY_HOST=0.0.0.0 \
    CASEFLOW_CONSOLE_HOST=0.0.0.0
RUN useradd --system --uid 10001 --user-group --home-dir /app --create-home \
        --shell /usr/sbin/nologin caseflow
COPY --from=build /opt/caseflow /opt/caseflow
WORKDIR /app
USER 10001:10001
EXPOSE 8000 8001 8002 8003
# The service this container runs (`caseflow serve <it>`, read from PID 1's command line)
# answers /readyz on its port; a one-shot `caseflow migrate` is always healthy.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "shared.cli.health"]
# No ENTRYPOINT: a command is the whole argv, and the service runs as PID 1 and gets
# the SIGTERM of `docker stop` itself (it drains, then exits).
CMD ["caseflow", "serve", "intake"]
