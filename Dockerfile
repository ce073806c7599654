# LeadFlow's one image: the API, the three pools, control and flower differ only by command
# (docker-compose.yml, deploy/k8s/). Two stages: dependencies are built apart, and the final
# image runs as an unprivileged user with no compiler, no pip cache and a read-only-friendly
# layout (nothing is written under /app at run time; /tmp is the only scratch space).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from pyproject.toml alone, so a code change reuses this layer.
COPY pyproject.toml ./
RUN pip install .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=leadflow.settings \
    LEADFLOW_LOG_FORMAT=json
# Numeric uid/gid, so Kubernetes can check runAsNonRoot against the image.
RUN groupadd --system --gid 10001 leadflow \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin leadflow
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Only the code: no .venv, no var/ (embedded data), no tests from a developer's checkout.
# flowerconfig.py: Flower reads it from its working directory (credentials required, read-only).
COPY manage.py pyproject.toml gunicorn.conf.py flowerconfig.py ./
COPY leadflow ./leadflow
COPY apps ./apps
COPY workers ./workers
COPY config ./config
# The admin's static files, compressed, for WhiteNoise to serve (root-owned: read-only is fine).
RUN python manage.py collectstatic --noinput
USER 10001:10001
EXPOSE 8000 8001 5555 9100 9101 9102 9103
# The API by default (the Procfile's api line, listening on all interfaces: 8000 public, 8001 the
# operator listener, never to be published beyond the host or cluster); the other processes set
# their own command. --graceful-timeout: in-flight requests finish on SIGTERM.
CMD ["gunicorn", "leadflow.wsgi", "-c", "gunicorn.conf.py", "-b", "0.0.0.0:8000", "-b", "0.0.0.0:8001", \
     "--no-control-socket", "-k", "sync", \
     "-w", "2", "--timeout", "30", "--graceful-timeout", "10", \
     "--max-requests", "20000", "--max-requests-jitter", "2000"]
