# syntax=docker/dockerfile:1
# Sigil's container image: `docker build -t REGISTRY/sigil:0.1.0 .` from the repository root.

# Build stage: the same Rust release the project builds with (rust-version is 1.89).
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin sigil \
    && install -D -m 0755 target/release/sigil /out/sigil

# Runtime: the binary links glibc (ring, rustls and jemalloc are static), so distroless "cc"
# (glibc and libgcc from the same Debian release as the builder; no shell, no package
# manager). Its `nonroot` user is 65532, which the Helm chart also sets.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/sigil /usr/local/bin/sigil
# Dapr's chart runs `command: ["/sentry"]` with Sentry's flags: the same binary under that
# name takes them as `sigil serve` does, so the image drops into Dapr's chart unchanged.
COPY --from=build /out/sigil /sentry
USER 65532:65532
# gRPC (dapr-sentry), /healthz, metrics.
EXPOSE 50001 8080 9090
ENTRYPOINT ["/usr/local/bin/sigil"]
CMD ["serve"]
