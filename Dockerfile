# syntax=docker/dockerfile:1
#
# stockflow container image: one binary, `stockflow`, whose subcommands are
# migrate, seed, topics, produce and run (see the contract's "Command line").
#
#   docker build -t stockflow:local .
#   docker run --rm -e DATABASE_URL=... -e KAFKA_BROKERS=... stockflow:local run
#
# Needs BuildKit (the default builder of current Docker) for the cache mounts.

# --- builder ------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# rdkafka is built with its `cmake-build` feature: librdkafka is compiled from
# source here, which needs cmake and a C/C++ toolchain plus the headers of
# its `ssl` and `libz` features (OpenSSL, zlib; found with pkg-config).
# Without rdkafka's `curl` and `gssapi` features, rdkafka-sys builds it
# WITH_CURL=0 and WITH_SASL=0: nothing links libcurl or Cyrus SASL. The curl
# headers are still needed to compile: librdkafka 2.12's rdkafka_conf.c tests
# `#ifdef WITH_OAUTHBEARER_OIDC`, which its generated config.h defines as 0
# (rust:bookworm happens to carry them; named here so it does not matter).
# Package versions come with the pinned Debian release; not pinned one by one.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        cmake g++ make pkg-config \
        libssl-dev zlib1g-dev libcurl4-openssl-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /build

# Dependency builds are cached by the BuildKit cache mounts below (crate
# downloads and target/), not by the "copy the manifests, build stub sources"
# layer trick: that trick breaks as soon as a manifest names a bench, test or
# example file the stub lacks, and can ship the stub binary when file mtimes
# go backwards. With target/ cached, a rebuild recompiles only the workspace
# crates that changed.
#
# Everything that .dockerignore lets through is copied. migrations/ must be
# among it: the SQL migrations are embedded into the binary at compile time.
COPY . .

# target/ lives in a cache mount, so the binary is copied out of it within the
# same RUN step. Cargo does not necessarily notice a migration added to (or
# edited in) migrations/ when no Rust file changed, so when the migrations
# differ from those of the last build in this cache, the workspace's Rust
# sources are touched to force the crate that embeds them to recompile.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/build/target,sharing=locked \
    set -euo pipefail; \
    test -d migrations || { echo 'migrations/ is missing from the build context' >&2; exit 1; }; \
    migrations_sum="$(find migrations -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum)"; \
    if [ "$(cat target/.migrations.sha256 2>/dev/null || true)" != "$migrations_sum" ]; then \
        find . -path ./target -prune -o -name '*.rs' -exec touch {} +; \
    fi; \
    cargo build --release --locked --bin stockflow; \
    printf '%s' "$migrations_sum" > target/.migrations.sha256; \
    install -D -m 0755 target/release/stockflow /out/stockflow

# --- runtime ------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

# Only what the binary links beyond the base image (libc6, libgcc-s1 and
# zlib1g are in it): libssl3 (libssl, libcrypto). ca-certificates: the TLS
# trust store for Kafka SSL and PostgreSQL TLS. scripts/check_runtime_deps.py
# checks this list against the binary's NEEDED libraries.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 stockflow \
    && useradd --system --uid 10001 --gid stockflow \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin stockflow

COPY --from=builder /out/stockflow /usr/local/bin/stockflow

# Numeric, so that "runAsNonRoot"-style checks can verify it without /etc/passwd.
USER 10001:10001

ENV RUST_LOG=info

# 9464: the processor's Prometheus metrics (`run --metrics-addr 0.0.0.0:9464`).
EXPOSE 9464

ENTRYPOINT ["stockflow"]
CMD ["run"]
