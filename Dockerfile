# syntax=docker/dockerfile:1

# One image holds every comb service; each container picks its service with
# `comb serve <service>` (the default command runs the gateway).
#
# Build and push for amd64 and arm64 at once:
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/comb:0.1.0 --push .
# On an amd64 host the arm64 half runs under QEMU emulation and is much slower; a native
# arm64 builder node (`docker buildx create --append`) avoids that.

FROM rust:1.95-bookworm AS build
# buildx sets this per platform; the cache ids below depend on it.
ARG TARGETPLATFORM
WORKDIR /src
COPY . .
# The caches outlive the build, so an edit recompiles comb, not every dependency.
# They are kept per platform: buildx builds both platforms at once, and cargo's lock on
# the registry lives outside the mount, so a shared cache could be written twice at once
# (and a target directory cannot hold two architectures' artifacts).
# The binary is copied out in the same step because a cache mount is not part of the image.
RUN --mount=type=cache,id=comb-cargo-registry-$TARGETPLATFORM,target=/usr/local/cargo/registry \
    --mount=type=cache,id=comb-target-$TARGETPLATFORM,target=/src/target \
    cargo build --release --locked -p comb \
    && install -D -m 0755 target/release/comb /out/comb \
    && mkdir -p /out/media

# The media worker's image: the same binary with Debian's ffmpeg, which it runs to make
# renditions. Build it with `--target media-worker` and tag it like the main image with
# `-media-worker` after the name (REGISTRY/comb-media-worker:0.1.0): `comb export` names
# it so.
FROM debian:bookworm-slim AS media-worker
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/comb /usr/local/bin/comb
COPY --from=build --chown=65532:65532 /out/media /var/lib/comb/media
USER 65532:65532
ENV COMB_LISTEN=0.0.0.0:8080 \
    COMB_DATA_DIR=/tmp/comb \
    COMB_LOG_FORMAT=json \
    COMB_MEDIA_STORE=/var/lib/comb/media
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/comb"]
CMD ["serve", "media-worker"]

# distroless/cc: glibc (the build image is also Debian 12, so the versions match), CA
# certificates and nothing else: no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="comb" \
      org.opencontainers.image.description="comb, an online store built as microservices: every service in one binary, run with comb serve <service>" \
      org.opencontainers.image.source="https://example.invalid/comb" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/comb /usr/local/bin/comb
# Media's shared files, owned by the service's user so a fresh named volume is writable.
COPY --from=build --chown=65532:65532 /out/media /var/lib/comb/media
# Numeric, so Kubernetes can verify runAsNonRoot without looking the name up.
USER 65532:65532
# The built-in default listens on a random loopback port, which nothing outside the
# container could reach. /tmp is writable by the non-root user and is where a volume goes
# when the root filesystem is read-only. JSON logs are the default already; set here so
# log collectors can rely on it.
ENV COMB_LISTEN=0.0.0.0:8080 \
    COMB_DATA_DIR=/tmp/comb \
    COMB_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/comb"]
CMD ["serve", "gateway"]
