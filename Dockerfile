# LeadFlow's one image: the API, the three pools, control and flower differ only by command
# (see docker-compose.yml). Two stages: dependencies are built apart, and the final image runs
# as an unprivileged user with no compiler and no pip cache.

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
    DJANGO_SETTINGS_MODULE=leadflow.settings
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin leadflow
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Only the code: no .venv, no var/ (embedded data) from a developer's checkout.
COPY manage.py pyproject.toml ./
COPY leadflow ./leadflow
COPY apps ./apps
COPY workers ./workers
COPY config ./config
RUN python manage.py collectstatic --noinput \
    && mkdir -p /app/var \
    && chown -R leadflow:leadflow /app/var
USER leadflow
EXPOSE 8000
CMD ["gunicorn", "leadflow.wsgi", "-b", "0.0.0.0:8000", "--no-control-socket", "-k", "sync", "-w", "2", "--timeout", "30"]
