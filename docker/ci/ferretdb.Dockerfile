# CI only: FerretDB v1.24.2 (MongoDB wire protocol on PostgreSQL), the binary spec/services.sh
# builds, on the local base: the mongo image cannot be pulled on the CI machine. The build
# context is a folder holding `ferretdb` and this repository's docker/ci/ferretdb-entrypoint.sh.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
COPY ferretdb /usr/local/bin/ferretdb
COPY ferretdb-entrypoint.sh /usr/local/bin/ferretdb-entrypoint
RUN mkdir -p /state && chown 10002:10002 /state
USER 10002:10002
EXPOSE 27017
ENTRYPOINT ["/usr/local/bin/ferretdb-entrypoint"]
