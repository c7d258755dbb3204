# CI only: Prefect 3 from PyPI on the local base, standing in for prefecthq/prefect:3-python3.12
# (which cannot be pulled on the CI machine): Python and the prefect package, a non-root user,
# no entrypoint of its own. docker/prefect-worker.Dockerfile is built on it in CI.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
ARG PREFECT_VERSION=3.9.1
# a CA bundle for pip when the build host reaches PyPI through a TLS-inspecting proxy (docker/ci.sh
# mounts the host's bundle there and passes its path); empty: pip's own
ARG PIP_CERT=
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* \
 && python3 -m venv /opt/prefect \
 && /opt/prefect/bin/pip install -q --no-cache-dir --disable-pip-version-check ${PIP_CERT:+--cert "$PIP_CERT"} "prefect==${PREFECT_VERSION}" \
 && find /opt/prefect -name __pycache__ -prune -exec rm -rf {} + \
 && useradd --uid 10003 --no-create-home --home-dir /var/lib/prefect --shell /usr/sbin/nologin prefect \
 && mkdir -p /var/lib/prefect && chown prefect:prefect /var/lib/prefect
ENV PATH=/opt/prefect/bin:$PATH PREFECT_HOME=/var/lib/prefect
USER prefect
CMD ["prefect", "version"]
