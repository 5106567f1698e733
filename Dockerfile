# syntax=docker/dockerfile:1
#
# The serverfirst image: the release binary on distroless, running as a non-root user.
#   docker build -t serverfirst:0.1.0 .

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The caches keep the registry and build artefacts between builds; the binary is copied out
# because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin serverfirst \
    && cp target/release/serverfirst /serverfirst

# glibc and libgcc only (the binary links nothing else: rustls with ring, no OpenSSL).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /serverfirst /serverfirst
# 65532 is distroless's "nonroot"; numeric so runAsNonRoot can verify it.
USER 65532:65532
# 8443: the webhook (HTTPS); 9090: metrics and health (plain HTTP).
EXPOSE 8443 9090
ENTRYPOINT ["/serverfirst"]
