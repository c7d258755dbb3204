# docker/prefect-worker.Dockerfile — a Prefect process worker that can run `dp-engine run`:
# the Prefect image plus the engine (binary, Lua library, migrations, scripts) copied from the
# dp-engine image, and the engine's runtime libraries. Built by compose (prefect-worker).
# PREFECT_IMAGE is Debian bookworm based (python:3.12-slim), so the library names match.
ARG PREFECT_IMAGE=prefecthq/prefect:3-python3.12
ARG DP_ENGINE_IMAGE=dp-engine:latest
FROM ${DP_ENGINE_IMAGE} AS engine

FROM ${PREFECT_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
USER root
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends \
      libluajit-5.1-2 lua-cjson libpq5 libcurl4 libuv1 libssl3 libzstd1 \
      libsodium23 libxxhash0 zlib1g libhttp-parser2.9 tzdata ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* \
 && groupadd --gid 10001 dp \
 && useradd --uid 10001 --gid dp --no-create-home --home-dir /srv/dp --shell /usr/sbin/nologin dp \
 && mkdir -p /data /srv/dp /var/lib/prefect \
 && chown dp:dp /data /var/lib/prefect
COPY --from=engine /usr/local/bin/dp-engine /usr/local/bin/dp-entrypoint /usr/local/bin/
COPY --from=engine /usr/local/lib/dp-engine/ /usr/local/lib/dp-engine/
COPY --from=engine /usr/local/share/dp-engine/ /usr/local/share/dp-engine/
COPY --from=engine /srv/dp/ /srv/dp/
COPY docker/prefect/ /srv/dp/prefect/
ENV DP_HOME=/usr/local/share/dp-engine \
    DP_SCRIPTS=/srv/dp \
    DP_METADATA=mongo \
    DP_DATA_DIR=/data \
    MONGOC_DISABLE_SHM=1 \
    PREFECT_HOME=/var/lib/prefect
LABEL com.centurylinklabs.watchtower.enable="false"
USER dp:dp
WORKDIR /srv/dp
HEALTHCHECK --interval=60s --timeout=10s --start-period=60s --retries=3 \
  CMD ["dp-engine", "--version"]
# The worker's flow runs call `dp-entrypoint run SYSTEM` (secrets from /run/secrets, as in the
# engine container); the worker itself is Prefect's.
CMD ["prefect", "worker", "start", "--pool", "dp-engine", "--type", "process"]
