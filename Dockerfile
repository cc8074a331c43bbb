# syntax=docker/dockerfile:1
# The kafscale container image: one `kafscale` binary (every mode: ingest, fetch, indexer,
# standalone, admin) and `kafscale-loadtest`, on a distroless base with no shell.
#
#   docker build -t kafscale:dev .
#   docker run --rm kafscale:dev standalone --kafka-addr 0.0.0.0:9092 --http-addr 0.0.0.0:9093
#
# Why this shape (docs/deploy.md has the rest):
# * Build stage: the release profile, the only one the project uses (Cargo.toml tunes it),
#   `--locked` so the image is built from exactly Cargo.lock. Cargo's registry and target
#   directories are BuildKit cache mounts, so a rebuild after a source change recompiles only
#   the workspace crates. The binaries are copied out of the cache mount before the stage ends.
# * Run stage: distroless/cc (glibc, libgcc, CA certificates for S3 and DynamoDB over TLS; no
#   shell, no package manager). The binaries link only glibc and libgcc dynamically: the TLS
#   stack is rustls and the compression codecs are built in.
# * A numeric non-root user (65532, distroless's "nonroot"), so Kubernetes' runAsNonRoot can
#   check it without a passwd lookup. The process writes nothing outside --data-dir (standalone
#   only; the distributed tiers keep no local state), so a read-only root filesystem works.

ARG RUST_VERSION=1.88

FROM rust:${RUST_VERSION}-bookworm AS build
# The release profile keeps line tables for backtraces (Cargo.toml), which makes the binaries
# several times larger; the image drops them by default (STRIP=none keeps them).
ARG STRIP=debuginfo
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    export CARGO_PROFILE_RELEASE_STRIP="${STRIP}" \
 && cargo build --release --locked --bin kafscale -p kafscale \
 && cargo build --release --locked --bin kafscale-loadtest -p kafscale-loadtest \
 && mkdir -p /out \
 && cp target/release/kafscale target/release/kafscale-loadtest /out/

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="kafscale" \
      org.opencontainers.image.description="Kafka-compatible streaming on object storage" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/kafscale /out/kafscale-loadtest /usr/local/bin/
USER 65532:65532
# Kafka (gateways, standalone), HTTP (/healthz, /readyz, /metrics, admin API), indexer HTTP.
EXPOSE 9092 9093 9094
# Distroless has no shell or curl: Kubernetes probes /healthz over HTTP instead.
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/kafscale"]
CMD ["--help"]
