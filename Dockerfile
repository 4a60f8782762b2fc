# The node's own image. Build it from the repository root:
#   docker build -t infernet-local/node:latest .
# It runs `infernet-node run` with /node/config.json (the repository's config.json unless you
# mount another) and keeps its log and SQLite store in /node/data (a volume). With
# `manage_containers: true` it starts its services as *sibling* containers: mount the host's
# /var/run/docker.sock, and run it with host networking (`--network host`, as docker-compose.yaml
# does) so that it reaches the ports the services publish on the host's 127.0.0.1.
#
# BASE defaults to the public Python image, and the Python packages then come from PyPI. Where
# neither Docker Hub nor PyPI can be reached from a build, scripts/build-node-image.sh passes a
# local Debian base and a wheelhouse it filled on the host (build/node-wheelhouse).
ARG BASE=python:3.12-slim

FROM ${BASE} AS build
# Marks this stage's leftover image, so scripts/build-node-image.sh can prune exactly those.
LABEL org.infernet-local.node-build-stage=1
COPY pyproject.toml README.md /src/
COPY node /src/node
COPY migrations /src/migrations
# The wheelhouse is optional: the pattern matches nothing without it, and pyproject.toml is here
# only so that this COPY always has a source.
COPY pyproject.toml build/node-wheelhous[e] /wheels/
RUN set -eu; \
    if ls /wheels/*.whl >/dev/null 2>&1; then \
        python3 -m venv --without-pip /opt/venv; \
        pip_wheel=$(ls /wheels/pip-*.whl | head -n 1); \
        /opt/venv/bin/python "$pip_wheel/pip" install --no-cache-dir --no-index --find-links /wheels \
            --disable-pip-version-check /src "$pip_wheel"; \
    else \
        python3 -m venv /opt/venv; \
        /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check /src; \
    fi; \
    /opt/venv/bin/infernet-node --version

FROM ${BASE}
COPY --from=build /opt/venv /opt/venv
WORKDIR /node
COPY config.json /node/config.json
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    INFERNET_CONFIG_PATH=/node/config.json
VOLUME ["/node/data"]
EXPOSE 4000
# Root by default: the Docker socket is root's (or the docker group's) on most hosts.
ENTRYPOINT ["infernet-node"]
CMD ["run"]
