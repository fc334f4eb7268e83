# syntax=docker/dockerfile:1.7
# pruneforge operator image (crate operator/, binary pruneforge-operator).
#
# Build context: the repository root (docs/images.md):
#   docker buildx build -f docker/operator.Dockerfile -t ghcr.io/pruneforge/pruneforge-operator:0.1.0 .
# The operator never links candle; the image is the static-ish Rust binary on distroless/cc
# (glibc, libgcc, CA certificates; no shell), running as the distroless nonroot user 65532.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the crates.io registry and the target directory between builds; the binary
# is copied out of the cache mount in the same step.
RUN --mount=type=cache,id=pruneforge-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=pruneforge-operator-target,target=/src/target \
    cargo build --release --locked -p pruneforge-operator --bin pruneforge-operator \
    && install -D -m 0755 target/release/pruneforge-operator /out/pruneforge-operator

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="pruneforge-operator" \
      org.opencontainers.image.description="Kubernetes operator reconciling PruneDistillJob into runner Jobs" \
      org.opencontainers.image.source="https://github.com/pruneforge/pruneforge" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/pruneforge-operator /usr/local/bin/pruneforge-operator
USER 65532:65532
# /metrics, /healthz and /readyz (--metrics-addr; the chart's metrics.port).
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/pruneforge-operator"]
