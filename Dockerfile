# pushstr's container image: `make image` (podman, else docker).
#
# BASE_IMAGE is any Debian bookworm with python3 (3.11) and the venv module: the official slim Python image by
# default, or the image `make image` builds with debootstrap where no registry image can be pulled. Both stages use
# it, so the virtualenv built in the first runs unchanged in the second.
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm

# --- build: the pushstr wheel and wheels of everything it needs -------------------------------------------------
FROM ${BASE_IMAGE} AS build
# pip trusts the system's CA store (a base built here may add a TLS-inspecting proxy's CA to it).
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# A current pip builds the one dependency without a wheel on PyPI (http-ece) in an isolated PEP 517 build.
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip install --quiet --upgrade pip \
    && /opt/build/bin/pip wheel --quiet --wheel-dir /wheels .

# --- runtime: a virtualenv installed from those wheels, no compiler, no network -----------------------------------
FROM ${BASE_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/pushstr/bin:$PATH
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python3 -m venv /opt/pushstr \
    && /opt/pushstr/bin/pip install --quiet --no-index --find-links /wheels pushstr \
    && /opt/pushstr/bin/pip uninstall --quiet --yes pip setuptools \
    && useradd --uid 10001 --user-group --home-dir /var/lib/pushstr --no-create-home --shell /usr/sbin/nologin pushstr \
    && install -d -o pushstr -g pushstr -m 0700 /var/lib/pushstr \
    && install -d -m 0755 /etc/pushstr

# The two settings that belong to the container rather than to the deployment: listen on every address of the
# container's network, keep state in the volume. Environment variables outrank the configuration file, so set
# PUSHSTR_SERVER__HOST / PUSHSTR_SERVER__DATA_DIR (not the file) to change them. Everything else comes from
# /etc/pushstr/pushstr.toml when it is mounted (read as ./pushstr.toml), else from PUSHSTR_* variables.
ENV PUSHSTR_SERVER__HOST=0.0.0.0 \
    PUSHSTR_SERVER__DATA_DIR=/var/lib/pushstr
WORKDIR /etc/pushstr
VOLUME /var/lib/pushstr
USER pushstr
EXPOSE 8080

# /health on the port the configuration names (read the way `serve` reads it), with the standard library only.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; from pushstr.config import load_settings; urllib.request.urlopen(f'http://127.0.0.1:{load_settings().server.port}/health', timeout=4)"]

ENTRYPOINT ["pushstr"]
CMD ["serve"]
